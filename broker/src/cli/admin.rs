//! A blocking admin connection for the CLI: connects, asks ApiVersions which versions the broker
//! serves, and sends each request at the highest version both sides know.

use std::collections::HashMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, Context};
use causeway_protocol::client::call;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest};
use kafka_protocol::protocol::{Request, StrBytes};

/// Client id the CLI sends.
const CLIENT_ID: &str = "causeway-cli";

/// How long the CLI waits to connect and for each response.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection to a broker.
pub struct AdminConnection {
    stream: TcpStream,
    served: HashMap<i16, (i16, i16)>,
    next_correlation_id: i32,
}

impl AdminConnection {
    /// Connects to `bootstrap` (HOST:PORT) and learns its API versions.
    pub fn connect(bootstrap: &str) -> anyhow::Result<AdminConnection> {
        let addr = bootstrap
            .to_socket_addrs()
            .with_context(|| format!("resolving {bootstrap}"))?
            .next()
            .ok_or_else(|| anyhow!("{bootstrap} resolves to no address"))?;
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .with_context(|| format!("connecting to {bootstrap}"))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
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
        Ok(connection)
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
