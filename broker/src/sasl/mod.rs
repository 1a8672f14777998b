//! The server side of SASL authentication for Kafka clients, without any I/O: a connection
//! handler feeds the `auth_bytes` of each SaslAuthenticate request to an [`Authenticator`] and
//! sends back what [`Step`] says. Credentials come from whatever implements
//! [`CredentialLookup`], so where they are stored is not this module's business.
//!
//! - [`plain`]: `PLAIN` (RFC 4616), one message, checked against the user's SCRAM credential;
//! - [`scram`]: `SCRAM-SHA-256` and `SCRAM-SHA-512` (RFC 5802, RFC 7677), two round trips, and
//!   the stored form of a credential.
//!
//! Round trips, as Kafka clients drive them:
//! - `PLAIN`: one `step` with the client's only message, which answers [`Step::Done`] with an
//!   empty response or [`Step::Failed`];
//! - SCRAM: the first `step` takes client-first and answers [`Step::Continue`] with
//!   server-first; the second takes client-final and answers [`Step::Done`] whose response is
//!   server-final (`v=...`), which the client needs to authenticate the server.
//!
//! The reason in [`Step::Failed`] names users and what went wrong: it is for the broker's log,
//! not for the client, which must only learn that authentication failed.

pub mod client;
pub mod plain;
pub mod scram;

#[cfg(test)]
mod tests;

use std::sync::OnceLock;

pub use scram::ScramCredential;

/// Largest client message accepted at any step. Real ones are well under 1 KiB; the bound keeps
/// a client from making the broker parse or hash arbitrary amounts of data before it has
/// authenticated.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Longest user name accepted, in bytes after SCRAM unescaping.
pub const MAX_USERNAME_BYTES: usize = 255;

/// A SASL mechanism the broker offers, as Kafka names it in SaslHandshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// `PLAIN`: user name and password in the clear; only sensible over TLS.
    Plain,
    /// `SCRAM-SHA-256`: challenge and response, the password never crosses the wire.
    ScramSha256,
    /// `SCRAM-SHA-512`: the same with SHA-512.
    ScramSha512,
}

impl Mechanism {
    /// Every mechanism, in the order the broker lists them in a SaslHandshake response.
    pub const ALL: [Mechanism; 3] = [
        Mechanism::Plain,
        Mechanism::ScramSha256,
        Mechanism::ScramSha512,
    ];

    /// The mechanism a client asked for in SaslHandshake; names are case-sensitive, as in Kafka.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|mechanism| mechanism.name() == name)
    }

    /// The name Kafka clients and configuration use.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Where credentials come from. SCRAM needs the stored credential itself; PLAIN only needs a
/// yes or no, which by default derives the SCRAM credential from the password and compares, so
/// a store only has to implement [`CredentialLookup::scram`].
pub trait CredentialLookup {
    /// The credential of `user` for a SCRAM `mechanism`, or `None` when it has none.
    fn scram(&self, mechanism: Mechanism, user: &str) -> Option<ScramCredential>;

    /// Whether `password` is `user`'s. Costs a PBKDF2 derivation (thousands of HMACs), so
    /// callers should not run a PLAIN step on an async worker thread.
    fn plain_matches(&self, user: &str, password: &[u8]) -> bool {
        plain::matches_scram_credential(self, user, password)
    }
}

/// What a connection does after one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes back (SaslAuthenticate `auth_bytes`) and wait for the next message.
    Continue(Vec<u8>),
    /// Authenticated as `principal` (the user name; Kafka's principal is `User:<principal>`).
    /// `response` still goes to the client: SCRAM's server-final proves the broker knew the
    /// credential; for PLAIN it is empty.
    Done {
        /// The authenticated user name.
        principal: String,
        /// Bytes for the last SaslAuthenticate response.
        response: Vec<u8>,
    },
    /// Authentication failed, with the reason for the log. The caller answers
    /// SASL_AUTHENTICATION_FAILED without this reason and closes the connection.
    Failed(String),
}

/// One connection's authentication exchange, for the mechanism chosen in SaslHandshake.
/// Once it has answered [`Step::Done`] or [`Step::Failed`], every further step fails.
pub struct Authenticator {
    mechanism: Mechanism,
    state: State,
    secret: Option<[u8; 32]>,
    fixed_server_nonce: Option<String>,
}

enum State {
    First,
    ScramFinal(Box<scram::Exchange>),
    Finished,
}

impl Authenticator {
    /// Starts an exchange. Unknown SCRAM users get a fake salt derived from a secret drawn
    /// once per process, so it is stable for a user while the broker runs.
    pub fn new(mechanism: Mechanism) -> Authenticator {
        Authenticator {
            mechanism,
            state: State::First,
            secret: None,
            fixed_server_nonce: None,
        }
    }

    /// Like [`Authenticator::new`], with the secret fake salts are derived from; a broker that
    /// keeps one across restarts makes an unknown user's salt stable across restarts too.
    pub fn with_secret(mechanism: Mechanism, secret: [u8; 32]) -> Authenticator {
        Authenticator {
            secret: Some(secret),
            ..Authenticator::new(mechanism)
        }
    }

    /// An exchange whose server nonce is `nonce` instead of a random one, for known-answer tests.
    #[cfg(test)]
    fn with_server_nonce(mechanism: Mechanism, secret: [u8; 32], nonce: &str) -> Authenticator {
        Authenticator {
            fixed_server_nonce: Some(nonce.to_string()),
            ..Authenticator::with_secret(mechanism, secret)
        }
    }

    /// The mechanism this exchange runs.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Takes the client's next message. See the module documentation for how many steps each
    /// mechanism takes.
    pub fn step(&mut self, input: &[u8], store: &dyn CredentialLookup) -> Step {
        let state = std::mem::replace(&mut self.state, State::Finished);
        if input.len() > MAX_MESSAGE_BYTES {
            return Step::Failed(format!(
                "{} message of {} bytes, more than {MAX_MESSAGE_BYTES}",
                self.mechanism.name(),
                input.len()
            ));
        }
        let step = match state {
            State::Finished => {
                return Step::Failed("authentication already finished".to_string());
            }
            State::First if self.mechanism == Mechanism::Plain => plain::authenticate(input, store),
            State::First => match self.scram_first(input, store) {
                Ok((exchange, server_first)) => {
                    self.state = State::ScramFinal(Box::new(exchange));
                    return Step::Continue(server_first.into_bytes());
                }
                Err(reason) => Step::Failed(reason),
            },
            State::ScramFinal(exchange) => match exchange.client_final(input) {
                Ok(server_final) => Step::Done {
                    principal: exchange.user().to_string(),
                    response: server_final.into_bytes(),
                },
                Err(reason) => Step::Failed(reason),
            },
        };
        match step {
            Step::Failed(reason) => Step::Failed(format!("{}: {reason}", self.mechanism.name())),
            step => step,
        }
    }

    /// Client-first with this exchange's secret and server nonce.
    fn scram_first(
        &self,
        input: &[u8],
        store: &dyn CredentialLookup,
    ) -> Result<(scram::Exchange, String), String> {
        let secret = match self.secret {
            Some(secret) => secret,
            None => process_secret()?,
        };
        let nonce = match &self.fixed_server_nonce {
            Some(nonce) => nonce.clone(),
            None => scram::random_nonce()?,
        };
        scram::client_first(self.mechanism, input, store, &secret, nonce)
    }
}

/// The per-process secret unknown users' fake salts are derived from.
fn process_secret() -> Result<[u8; 32], String> {
    static SECRET: OnceLock<Option<[u8; 32]>> = OnceLock::new();
    let secret = SECRET.get_or_init(|| {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).ok().map(|()| secret)
    });
    secret.ok_or_else(|| "no randomness for the fake-salt secret".to_string())
}
