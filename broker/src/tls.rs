//! TLS for the Kafka listeners and the replication links (rustls, ring): the certificate and
//! key, optional client certificates (mTLS), the principal a client certificate names, and the
//! client side links to peer regions use (this region's certificate, the regions' authority).
//! The configurations are swapped whole on [`Tls::reload`] (SIGHUP), so a renewed certificate
//! is used by new connections without a restart and open ones keep their session.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

use crate::config::{BrokerOptions, ClientAuth};
use crate::metrics;

/// Longest a client may take to finish its TLS handshake: one that stalls (or speaks plaintext
/// to a TLS port and waits) is closed instead of holding a connection slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the certificate, key and client authorities come from, and whether clients present
/// certificates.
#[derive(Debug, Clone)]
struct TlsFiles {
    certificate: PathBuf,
    private_key: PathBuf,
    client_auth: ClientAuth,
    client_ca: Option<PathBuf>,
    /// Whether links to peers use TLS (`--replication-tls`).
    links: bool,
}

/// The TLS configurations every TLS listener accepts with and links to peers connect with,
/// reloadable.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    /// For links to peer regions, with `--replication-tls`.
    links: Option<RwLock<Arc<ClientConfig>>>,
}

impl Tls {
    /// Loads the configured certificate and key; `None` when no certificate is configured.
    /// A file that cannot be read or parsed stops the start with its path in the message.
    pub fn from_options(options: &BrokerOptions) -> anyhow::Result<Option<Arc<Tls>>> {
        let (Some(certificate), Some(private_key)) = (
            options.ssl_certificate_file.clone(),
            options.ssl_private_key_file.clone(),
        ) else {
            return Ok(None);
        };
        let files = TlsFiles {
            certificate,
            private_key,
            client_auth: options.ssl_client_auth,
            client_ca: options.ssl_client_ca_file.clone(),
            links: options.replication_tls,
        };
        let config = build_config(&files)?;
        let links = match files.links {
            true => Some(RwLock::new(Arc::new(build_link_config(&files)?))),
            false => None,
        };
        Ok(Some(Arc::new(Tls {
            files,
            current: RwLock::new(Arc::new(config)),
            links,
        })))
    }

    /// A connector for one link to a peer region, with the configuration loaded last; `None`
    /// when links are plaintext.
    pub fn link_connector(&self) -> Option<TlsConnector> {
        let links = self.links.as_ref()?;
        let config = match links.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        Some(TlsConnector::from(config))
    }

    /// An acceptor for one new connection, with the configuration loaded last.
    fn acceptor(&self) -> TlsAcceptor {
        let config = match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        TlsAcceptor::from(config)
    }

    /// The TLS session of a client that connected to `listener` ("kafka" or "http") from
    /// `peer`, once its handshake has finished within [`HANDSHAKE_TIMEOUT`]; `None` (logged and
    /// counted) if it failed or stalled.
    pub async fn accept<IO>(
        &self,
        stream: IO,
        listener: &'static str,
        peer: &str,
    ) -> Option<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor().accept(stream)).await;
        let (result, stream) = match outcome {
            Ok(Ok(stream)) => ("ok", Some(stream)),
            Ok(Err(error)) => {
                tracing::debug!(listener, %peer, %error, "TLS handshake failed");
                ("failed", None)
            }
            Err(_) => {
                tracing::debug!(listener, %peer, "TLS handshake timed out");
                ("timeout", None)
            }
        };
        metrics::tls_handshake(listener, result);
        stream
    }

    /// Reads the files again and serves new connections with them; on any error the previous
    /// configuration stays in use.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = Arc::new(build_config(&self.files)?);
        let link_config = match &self.links {
            Some(_) => Some(Arc::new(build_link_config(&self.files)?)),
            None => None,
        };
        swap(&self.current, config);
        if let (Some(links), Some(link_config)) = (&self.links, link_config) {
            swap(links, link_config);
        }
        Ok(())
    }
}

fn swap<T>(slot: &RwLock<Arc<T>>, value: Arc<T>) {
    match slot.write() {
        Ok(mut current) => *current = value,
        Err(poisoned) => *poisoned.into_inner() = value,
    }
}

/// rustls with ring, named explicitly: other crates in the process may enable other providers,
/// and rustls refuses to guess between them. rustls deprecates ring's provider because it has
/// no post-quantum key exchange; aws-lc-rs has one but needs cmake and a long C build, which
/// the 2-core CI cannot afford today (`docs/security.md`, TLS).
#[allow(deprecated)]
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build_config(files: &TlsFiles) -> anyhow::Result<ServerConfig> {
    let chain = read_certificates(&files.certificate)?;
    let key = read_private_key(&files.private_key)?;
    if let Some(expiry) = chain.first().and_then(not_after) {
        crate::metrics::tls_certificate_expiry(expiry);
    }
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match (files.client_auth, &files.client_ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (auth, Some(ca_file)) => {
            let roots = Arc::new(read_authorities(ca_file)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let verifier = match auth {
                ClientAuth::Requested => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            builder.with_client_cert_verifier(verifier.build().context("client verifier")?)
        }
        (_, None) => bail!("--ssl-client-auth other than none needs --ssl-client-ca-file"),
    };
    builder.with_single_cert(chain, key).with_context(|| {
        format!(
            "{} and {} do not make a usable certificate and key",
            files.certificate.display(),
            files.private_key.display()
        )
    })
}

/// The client side of links to peer regions: this region's certificate and key, and peers'
/// certificates checked against `--ssl-client-ca-file` (the regions' authority) and the host
/// name or address in their `--peer`.
fn build_link_config(files: &TlsFiles) -> anyhow::Result<ClientConfig> {
    let Some(ca_file) = &files.client_ca else {
        bail!("--replication-tls needs --ssl-client-ca-file (the regions' authority)");
    };
    client_config(ca_file, Some((&files.certificate, &files.private_key)))
}

/// A TLS client trusting the authorities in `ca_file` and presenting `certificate` (a PEM
/// chain and its key) when given: links to peers, and the admin commands.
pub fn client_config(
    ca_file: &Path,
    certificate: Option<(&Path, &Path)>,
) -> anyhow::Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(read_authorities(ca_file)?);
    match certificate {
        None => Ok(builder.with_no_client_auth()),
        Some((chain_file, key_file)) => builder
            .with_client_auth_cert(read_certificates(chain_file)?, read_private_key(key_file)?)
            .context("the certificate and key as a client certificate"),
    }
}

/// The authorities in the PEM file `ca_file`, as a trust store.
fn read_authorities(ca_file: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for authority in read_certificates(ca_file)? {
        roots
            .add(authority)
            .with_context(|| format!("a CA certificate in {}", ca_file.display()))?;
    }
    Ok(roots)
}

fn read_private_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("reading a PEM private key from {}", path.display()))
}

fn read_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading PEM certificates from {}", path.display()))?;
    if certificates.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certificates)
}

/// When a certificate stops being valid, in Unix seconds.
fn not_after(certificate: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = X509Certificate::from_der(certificate.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

/// The principal a client certificate names, as Kafka's default principal builder does:
/// `User:` and the subject in RFC 2253 form (`User:CN=alice,OU=eng,O=acme`).
pub fn principal_of(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = X509Certificate::from_der(certificate.as_ref()).ok()?;
    Some(format!("User:{}", rfc2253(parsed.subject())))
}

/// The subject's common name of a verified client certificate: what identifies a peer region
/// (its `--region` name) on the replication API keys.
pub fn common_name(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = X509Certificate::from_der(certificate.as_ref()).ok()?;
    let name = parsed.subject().iter_common_name().next()?;
    name.as_str().ok().map(str::to_owned)
}

/// A distinguished name as RFC 2253 writes it: the last RDN first, attributes of one RDN
/// joined by `+`, known attribute types by name and others as a dotted OID with the value's
/// DER in hex.
fn rfc2253(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attribute| {
                    let oid = attribute.attr_type();
                    let short =
                        x509_parser::objects::oid2abbrev(oid, x509_parser::objects::oid_registry())
                            .ok()
                            .filter(|short| RFC2253_KEYWORDS.contains(short));
                    match (short, attribute.as_str()) {
                        (Some(short), Ok(value)) => format!("{short}={}", escape(value)),
                        (_, value) => {
                            let hex: String = attribute
                                .attr_value()
                                .data
                                .iter()
                                .map(|b| format!("{b:02x}"))
                                .collect();
                            match (short, value) {
                                (Some(short), _) => format!("{short}=#{hex}"),
                                (None, _) => format!("{oid}=#{hex}"),
                            }
                        }
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// Attribute types RFC 2253 writes by name.
const RFC2253_KEYWORDS: [&str; 9] = ["CN", "L", "ST", "O", "OU", "C", "STREET", "DC", "UID"];

/// RFC 2253 escaping of an attribute value.
fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (index, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (index == 0 && (c == '#' || c == ' '))
            || (index == last && c == ' ');
        if special {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate_with(subject: &[(rcgen::DnType, &str)]) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("self-signed").der().clone()
    }

    #[test]
    fn the_principal_is_the_subject_in_rfc_2253_order_and_escaping() {
        let certificate = certificate_with(&[
            (rcgen::DnType::CountryName, "DE"),
            (rcgen::DnType::OrganizationName, "Acme, Inc."),
            (rcgen::DnType::CommonName, "alice"),
        ]);
        assert_eq!(
            principal_of(&certificate).as_deref(),
            Some("User:CN=alice,O=Acme\\, Inc.,C=DE")
        );
    }

    #[test]
    fn values_rfc_2253_marks_are_escaped() {
        assert_eq!(escape("#a+b "), "\\#a\\+b\\ ");
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape(""), "");
    }

    #[test]
    fn a_certificate_that_does_not_parse_names_no_principal() {
        assert_eq!(
            principal_of(&CertificateDer::from(vec![0x30, 0x03, 1, 2])),
            None
        );
    }
}
