//! The one HTTP call the HTTP-backed commands (`table`, `region`, `group describe --http`) make:
//! GET a JSON document, over HTTPS and with credentials when the listener wants them.

use std::sync::Arc;

use anyhow::Context;
use serde_json::Value;
use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig, TlsProvider};

use super::HttpAccess;

/// Environment variable holding the password of `--http-username` (never a flag: every user of
/// the machine can read a command line).
const PASSWORD_VARIABLE: &str = "CAUSEWAY_HTTP_PASSWORD";
/// Environment variable holding a bearer token, sent when no user is given.
const TOKEN_VARIABLE: &str = "CAUSEWAY_HTTP_BEARER_TOKEN";

/// A client for one broker's HTTP listener (and its peers', for `region status --also`).
pub(crate) struct HttpClient {
    agent: ureq::Agent,
    scheme: &'static str,
    authorization: Option<String>,
}

impl HttpClient {
    /// A client as `access` says: HTTPS trusting `--http-ca-file` when given, Basic credentials
    /// for `--http-username`, else a bearer token from the environment.
    pub(crate) fn new(access: &HttpAccess) -> anyhow::Result<HttpClient> {
        let config = ureq::Agent::config_builder().http_status_as_error(false);
        let (config, scheme) = match &access.http_ca_file {
            Some(path) => (config.tls_config(tls_trusting(path)?), "https"),
            None => (config, "http"),
        };
        let authorization = match &access.http_username {
            Some(user) => {
                let password = std::env::var(PASSWORD_VARIABLE).with_context(|| {
                    format!("--http-username {user} needs its password in {PASSWORD_VARIABLE}")
                })?;
                Some(format!(
                    "Basic {}",
                    base64_encode(format!("{user}:{password}").as_bytes())
                ))
            }
            None => std::env::var(TOKEN_VARIABLE)
                .ok()
                .filter(|token| !token.is_empty())
                .map(|token| format!("Bearer {token}")),
        };
        Ok(HttpClient {
            agent: config.build().new_agent(),
            scheme,
            authorization,
        })
    }

    /// GETs `path` (starting with `/`) from the listener at `host_port` and returns the JSON
    /// body of a 200, or the server's error message.
    pub(crate) fn get_json(&self, host_port: &str, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}://{host_port}{path}", self.scheme);
        let mut request = self.agent.get(&url);
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let mut response = request
            .call()
            .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| anyhow::anyhow!("reading the answer of {url}: {e}"))?;
        let json: Value = serde_json::from_str(&body)
            .map_err(|e| anyhow::anyhow!("{url} answered non-JSON ({e}): {body}"))?;
        if status != 200 {
            let message = json["error"].as_str().unwrap_or(&body).to_string();
            anyhow::bail!("{message} (HTTP {status})");
        }
        Ok(json)
    }
}

/// TLS that trusts only the authorities in the PEM file at `path`, with the broker's own
/// rustls provider.
fn tls_trusting(path: &std::path::Path) -> anyhow::Result<TlsConfig> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut authorities = Vec::new();
    for item in parse_pem(&pem) {
        if let PemItem::Certificate(certificate) =
            item.with_context(|| format!("parsing {}", path.display()))?
        {
            authorities.push(certificate);
        }
    }
    anyhow::ensure!(
        !authorities.is_empty(),
        "{} holds no PEM certificate",
        path.display()
    );
    Ok(TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::Specific(Arc::new(authorities)))
        .unversioned_rustls_crypto_provider(crate::tls::provider())
        .build())
}

/// Standard base64 with padding (RFC 4648), for the Basic credentials.
fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
