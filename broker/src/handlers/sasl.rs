//! SASL on the Kafka listener: where each connection is in authentication, which requests it may
//! send meanwhile, and the SaslHandshake and SaslAuthenticate answers. On a `SASL_PLAINTEXT`
//! listener a client may send only ApiVersions, SaslHandshake and SaslAuthenticate until it has
//! authenticated; anything else closes the connection, as Kafka does. A failed authentication is
//! answered SASL_AUTHENTICATION_FAILED (with no detail: the reason goes to the broker's log) and
//! the connection is closed.

use std::sync::Arc;

use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::config::SecurityProtocol;
use crate::metrics;
use crate::sasl::{Authenticator, Mechanism, Step};

/// One connection's authentication state.
pub enum SaslSession {
    /// A listener without authentication.
    NotRequired,
    /// Waiting for SaslHandshake.
    AwaitingHandshake,
    /// A mechanism was chosen; SaslAuthenticate requests drive the exchange.
    Authenticating(Box<Authenticator>),
    /// Authenticated as this user.
    Authenticated(String),
}

/// What the connection does with one SaslAuthenticate or SaslHandshake answer.
pub struct SaslAnswer<T> {
    /// The response to send.
    pub response: T,
    /// `Some(reason)`: close the connection after sending it.
    pub close: Option<String>,
}

/// The mechanisms `names` asks for, refusing unknown ones: checked at start so a typo in
/// `--sasl-enabled-mechanisms` stops the broker instead of locking every client out.
pub fn enabled_mechanisms(names: &[String]) -> anyhow::Result<Vec<Mechanism>> {
    names
        .iter()
        .map(|name| {
            Mechanism::from_name(name).ok_or_else(|| {
                anyhow::anyhow!(
                    "--sasl-enabled-mechanisms: unknown mechanism {name:?} (known: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"
                )
            })
        })
        .collect()
}

impl SaslSession {
    /// The state a new connection on a listener with `protocol` starts in.
    pub fn new(protocol: SecurityProtocol) -> SaslSession {
        match protocol {
            SecurityProtocol::Plaintext => SaslSession::NotRequired,
            SecurityProtocol::SaslPlaintext => SaslSession::AwaitingHandshake,
        }
    }

    /// Whether a request of `api_key` may be served now: everything once authenticated (or
    /// without authentication), before that only what authentication itself needs.
    pub fn admits(&self, api_key: ApiKey) -> bool {
        match self {
            SaslSession::NotRequired | SaslSession::Authenticated(_) => true,
            SaslSession::AwaitingHandshake | SaslSession::Authenticating(_) => matches!(
                api_key,
                ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
            ),
        }
    }

    /// The authenticated user, if any.
    pub fn principal(&self) -> Option<&str> {
        match self {
            SaslSession::Authenticated(user) => Some(user),
            _ => None,
        }
    }

    /// Answers SaslHandshake: the mechanism is taken if this listener offers it; otherwise the
    /// client learns which ones it does (UNSUPPORTED_SASL_MECHANISM) and may try again.
    pub fn handshake(
        &mut self,
        broker: &Broker,
        request: &SaslHandshakeRequest,
    ) -> SaslAnswer<SaslHandshakeResponse> {
        let offered = match self {
            SaslSession::AwaitingHandshake => {
                enabled_mechanisms(&broker.options.sasl_enabled_mechanisms).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let mut response = SaslHandshakeResponse::default();
        response.mechanisms = offered
            .iter()
            .map(|m| StrBytes::from_static_str(m.name()))
            .collect();
        if !matches!(self, SaslSession::AwaitingHandshake) {
            response.error_code = ResponseError::IllegalSaslState.code();
            return SaslAnswer {
                response,
                close: Some("SaslHandshake out of order".into()),
            };
        }
        match Mechanism::from_name(request.mechanism.as_str()).filter(|m| offered.contains(m)) {
            Some(mechanism) => {
                *self = SaslSession::Authenticating(Box::new(Authenticator::new(mechanism)));
            }
            None => response.error_code = ResponseError::UnsupportedSaslMechanism.code(),
        }
        SaslAnswer {
            response,
            close: None,
        }
    }

    /// Answers SaslAuthenticate: one step of the chosen mechanism, run on a blocking lane (PLAIN
    /// derives a key from the password, thousands of hashes).
    pub async fn authenticate(
        &mut self,
        broker: &Arc<Broker>,
        request: SaslAuthenticateRequest,
    ) -> SaslAnswer<SaslAuthenticateResponse> {
        let mut response = SaslAuthenticateResponse::default();
        let state = std::mem::replace(self, SaslSession::AwaitingHandshake);
        let SaslSession::Authenticating(mut authenticator) = state else {
            *self = state;
            response.error_code = ResponseError::IllegalSaslState.code();
            return SaslAnswer {
                response,
                close: Some("SaslAuthenticate without a SaslHandshake first".into()),
            };
        };
        let stepping = broker.clone();
        let ran = crate::blocking::METADATA
            .run(move || {
                let step = authenticator.step(&request.auth_bytes, &stepping.users);
                (authenticator, step)
            })
            .await;
        let (authenticator, step) = match ran {
            Ok(ran) => ran,
            Err(error) => (
                Box::new(Authenticator::new(Mechanism::ScramSha256)),
                Step::Failed(format!("authentication task: {error}")),
            ),
        };
        let mechanism = authenticator.mechanism().name();
        match step {
            Step::Continue(bytes) => {
                response.auth_bytes = bytes.into();
                *self = SaslSession::Authenticating(authenticator);
                SaslAnswer {
                    response,
                    close: None,
                }
            }
            Step::Done {
                principal,
                response: bytes,
            } => {
                tracing::debug!(user = %principal, mechanism, "authenticated");
                metrics::sasl_authentication(mechanism, true);
                response.auth_bytes = bytes.into();
                *self = SaslSession::Authenticated(principal);
                SaslAnswer {
                    response,
                    close: None,
                }
            }
            Step::Failed(reason) => {
                tracing::info!(%reason, "SASL authentication failed");
                metrics::sasl_authentication(mechanism, false);
                response.error_code = ResponseError::SaslAuthenticationFailed.code();
                response.error_message = Some(StrBytes::from_static_str(
                    "Authentication failed: invalid credentials",
                ));
                SaslAnswer {
                    response,
                    close: Some(format!("SASL authentication failed: {reason}")),
                }
            }
        }
    }
}
