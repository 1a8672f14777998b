//! SASL on the Kafka listener: where each connection is in authentication, which requests it may
//! send meanwhile, and the SaslHandshake and SaslAuthenticate answers. On a `SASL_PLAINTEXT`
//! listener a client may send only ApiVersions, SaslHandshake and SaslAuthenticate until it has
//! authenticated; anything else closes the connection, as Kafka does. A failed authentication is
//! answered SASL_AUTHENTICATION_FAILED (with no detail: the reason goes to the broker's log) and
//! the connection is closed. With `--connections-max-reauth-ms` (KIP-368) a session lasts that
//! long: the client is told so in SaslAuthenticate and must authenticate again, as the same
//! user, on the same connection before it expires; after that only a new SaslHandshake is
//! served.

use std::sync::Arc;
use std::time::{Duration, Instant};

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
pub struct SaslSession {
    state: State,
    /// How long an authentication lasts (`--connections-max-reauth-ms`; `None`: for the
    /// connection's life).
    lifetime: Option<Duration>,
}

enum State {
    /// A listener without authentication.
    NotRequired,
    /// Waiting for SaslHandshake.
    AwaitingHandshake,
    /// A mechanism was chosen; SaslAuthenticate requests drive the exchange. `previous` is the
    /// user of a session being renewed: re-authentication must be as the same user.
    Authenticating {
        authenticator: Box<Authenticator>,
        previous: Option<String>,
    },
    /// Authenticated as `user`, until `expires` if sessions expire.
    Authenticated {
        user: String,
        expires: Option<Instant>,
    },
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
    /// The state a new connection on a listener with `protocol` starts in; sessions last
    /// `reauth_ms` (0: for the connection's life).
    pub fn new(protocol: SecurityProtocol, reauth_ms: u64) -> SaslSession {
        let state = if protocol.uses_sasl() {
            State::AwaitingHandshake
        } else {
            State::NotRequired
        };
        SaslSession {
            state,
            lifetime: (reauth_ms > 0).then(|| Duration::from_millis(reauth_ms)),
        }
    }

    /// Whether a request of `api_key` may be served at `now`: everything while authenticated
    /// (or without authentication); before that, only what authentication needs; once a session
    /// expired, only a new SaslHandshake (and ApiVersions).
    pub fn admits(&self, api_key: ApiKey, now: Instant) -> bool {
        let authenticating = matches!(
            api_key,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        );
        match &self.state {
            State::NotRequired => true,
            State::Authenticated { expires, .. } => {
                expires.is_none_or(|at| now < at) || authenticating
            }
            State::AwaitingHandshake | State::Authenticating { .. } => authenticating,
        }
    }

    /// The authenticated user, if any.
    pub fn principal(&self) -> Option<&str> {
        match &self.state {
            State::Authenticated { user, .. } => Some(user),
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
        let previous = match &self.state {
            State::AwaitingHandshake => Some(None),
            State::Authenticated { user, .. } if self.lifetime.is_some() => {
                Some(Some(user.clone()))
            }
            _ => None,
        };
        let offered = match previous {
            Some(_) => {
                enabled_mechanisms(&broker.options.sasl_enabled_mechanisms).unwrap_or_default()
            }
            None => Vec::new(),
        };
        let mut response = SaslHandshakeResponse::default();
        response.mechanisms = offered
            .iter()
            .map(|m| StrBytes::from_static_str(m.name()))
            .collect();
        let Some(previous) = previous else {
            response.error_code = ResponseError::IllegalSaslState.code();
            return SaslAnswer {
                response,
                close: Some("SaslHandshake out of order".into()),
            };
        };
        match Mechanism::from_name(request.mechanism.as_str()).filter(|m| offered.contains(m)) {
            Some(mechanism) => {
                self.state = State::Authenticating {
                    authenticator: Box::new(Authenticator::new(mechanism)),
                    previous,
                };
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
        version: i16,
    ) -> SaslAnswer<SaslAuthenticateResponse> {
        let mut response = SaslAuthenticateResponse::default();
        let state = std::mem::replace(&mut self.state, State::AwaitingHandshake);
        let State::Authenticating {
            mut authenticator,
            previous,
        } = state
        else {
            self.state = state;
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
        let step = match (step, &previous) {
            (Step::Done { principal, .. }, Some(before)) if principal != *before => Step::Failed(
                format!("re-authenticated as {principal:?}, not as {before:?}"),
            ),
            (step, _) => step,
        };
        match step {
            Step::Continue(bytes) => {
                response.auth_bytes = bytes.into();
                self.state = State::Authenticating {
                    authenticator,
                    previous,
                };
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
                if version >= 1 {
                    // Clients before v1 cannot re-authenticate; their sessions do not expire.
                    response.session_lifetime_ms = self
                        .lifetime
                        .map_or(0, |l| i64::try_from(l.as_millis()).unwrap_or(i64::MAX));
                }
                let expires = self
                    .lifetime
                    .filter(|_| version >= 1)
                    .map(|l| Instant::now() + l);
                self.state = State::Authenticated {
                    user: principal,
                    expires,
                };
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
