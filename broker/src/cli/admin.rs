//! A blocking admin connection for the CLI: connects (over TLS and with SASL when the listener
//! wants them), asks ApiVersions which versions the broker serves, and sends each request at the
//! highest version both sides know.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use causeway_protocol::client::call;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Request, StrBytes};
use rustls::pki_types::ServerName;

use super::Target;
use crate::sasl::client::{self, ScramClient};
use crate::sasl::Mechanism;

/// Client id the CLI sends.
const CLIENT_ID: &str = "causeway-cli";

/// Where the CLI reads the SASL password: an environment variable, never the command line.
const PASSWORD_VARIABLE: &str = "CAUSEWAY_SASL_PASSWORD";

/// How long the CLI waits to connect and for each response.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A byte stream to the broker: TCP, or TLS over TCP.
trait Transport: Read + Write + Send {}

impl<T: Read + Write + Send> Transport for T {}

/// One connection to a broker.
pub struct AdminConnection {
    stream: Box<dyn Transport>,
    served: HashMap<i16, (i16, i16)>,
    next_correlation_id: i32,
}

impl AdminConnection {
    /// Connects to the broker `target` names, with its security protocol, and learns its API
    /// versions.
    pub fn connect(target: &Target) -> anyhow::Result<AdminConnection> {
        let bootstrap = target.bootstrap.as_str();
        let addr = bootstrap
            .to_socket_addrs()
            .with_context(|| format!("resolving {bootstrap}"))?
            .next()
            .ok_or_else(|| anyhow!("{bootstrap} resolves to no address"))?;
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .with_context(|| format!("connecting to {bootstrap}"))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let stream: Box<dyn Transport> = if target.security_protocol.uses_tls() {
            Box::new(tls_stream(target, stream)?)
        } else {
            Box::new(stream)
        };
        let mut connection = AdminConnection {
            stream,
            served: HashMap::new(),
            next_correlation_id: 1,
        };
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("causeway-cli"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let versions = connection.send_at(&request, 3)?;
        if versions.error_code != 0 {
            return Err(anyhow!(
                "ApiVersions failed with error {}",
                versions.error_code
            ));
        }
        connection.served = versions
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        if target.security_protocol.uses_sasl() {
            connection.authenticate(target)?;
        }
        Ok(connection)
    }

    /// SaslHandshake and SaslAuthenticate as `--sasl-username` with `CAUSEWAY_SASL_PASSWORD`.
    fn authenticate(&mut self, target: &Target) -> anyhow::Result<()> {
        let user = target
            .sasl_username
            .as_deref()
            .context("a SASL listener needs --sasl-username (and CAUSEWAY_SASL_PASSWORD)")?;
        let password = std::env::var(PASSWORD_VARIABLE).with_context(|| {
            format!("a SASL listener needs the password in {PASSWORD_VARIABLE}")
        })?;
        let mechanism = Mechanism::from_name(&target.sasl_mechanism).with_context(|| {
            format!(
                "--sasl-mechanism {:?}: one of SCRAM-SHA-512, SCRAM-SHA-256, PLAIN",
                target.sasl_mechanism
            )
        })?;
        let handshake = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str(mechanism.name()));
        let answer = self.send_at(&handshake, 1)?;
        if answer.error_code != 0 {
            bail!(
                "the broker does not offer {} (error {}; it offers {:?})",
                mechanism.name(),
                answer.error_code,
                answer.mechanisms
            );
        }
        if mechanism == Mechanism::Plain {
            self.sasl_round(client::plain_message(user, &password))?;
            return Ok(());
        }
        let mut scram = ScramClient::new(mechanism, user, &password).map_err(|e| anyhow!(e))?;
        let server_first = self.sasl_round(scram.client_first())?;
        let client_final = scram.client_final(&server_first).map_err(|e| anyhow!(e))?;
        let server_final = self.sasl_round(client_final)?;
        scram
            .verify_server_final(&server_final)
            .map_err(|e| anyhow!("SASL: {e}"))
    }

    /// One SaslAuthenticate round trip; the server's bytes.
    fn sasl_round(&mut self, auth_bytes: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(auth_bytes.into());
        let answer = self.send_at(&request, 1)?;
        if answer.error_code != 0 {
            bail!(
                "SASL authentication failed: {}",
                answer
                    .error_message
                    .as_ref()
                    .map_or("no reason given", |m| m.as_str())
            );
        }
        Ok(answer.auth_bytes.to_vec())
    }

    /// Sends `request` at the highest version both the broker and this client know.
    pub fn send<R: Request>(&mut self, request: &R) -> anyhow::Result<R::Response> {
        let version = self.version_for::<R>()?;
        self.send_at(request, version)
    }

    /// The highest version of `R` both the broker and this client know (for requests whose
    /// fields differ between versions).
    pub fn version_for<R: Request>(&self) -> anyhow::Result<i16> {
        let name = ApiKey::try_from(R::KEY)
            .map(|k| format!("{k:?}"))
            .unwrap_or_else(|_| R::KEY.to_string());
        let (min, max) = self
            .served
            .get(&R::KEY)
            .copied()
            .ok_or_else(|| anyhow!("the broker does not support {name}"))?;
        let version = max.min(R::VERSIONS.max);
        if version < min.max(R::VERSIONS.min) {
            return Err(anyhow!("no common version of {name}"));
        }
        Ok(version)
    }

    /// Sends `request` at `version`.
    pub fn send_at<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> anyhow::Result<R::Response> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        Ok(call(
            &mut self.stream,
            request,
            version,
            correlation_id,
            CLIENT_ID,
        )?)
    }
}

/// TLS over `stream` to the broker `target` names, checking its certificate against
/// `--ssl-ca-file` and the host in `--bootstrap`, presenting the client certificate if given.
fn tls_stream(
    target: &Target,
    stream: TcpStream,
) -> anyhow::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let ca_file = target
        .ssl_ca_file
        .as_deref()
        .context("an SSL listener needs --ssl-ca-file (the authority of its certificate)")?;
    let client_certificate = match (
        &target.client_certificate_file,
        &target.client_private_key_file,
    ) {
        (Some(certificate), Some(key)) => Some((certificate.as_path(), key.as_path())),
        (None, None) => None,
        _ => bail!("--client-certificate-file and --client-private-key-file go together"),
    };
    let config = crate::tls::client_config(ca_file, client_certificate)?;
    let host = target
        .bootstrap
        .rsplit_once(':')
        .map_or(target.bootstrap.as_str(), |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned())
        .with_context(|| format!("{host:?} is not a host name or address"))?;
    let connection =
        rustls::ClientConnection::new(Arc::new(config), name).context("starting TLS")?;
    Ok(rustls::StreamOwned::new(connection, stream))
}
