//! Who an HTTP request comes from, and whether it may have what it asks: the `Authorization`
//! header turned into a principal (HTTP Basic checked against the user's SCRAM credential, as
//! SASL/PLAIN is, or a bearer token from `--http-bearer-tokens-file`), then the same ACL decision
//! a Kafka request gets ([`crate::acl::store::Acls::authorize`]).
//!
//! Each route declares what it needs with [`guarded`] and an [`Access`]; the guard answers 401
//! (no or bad credentials, with `WWW-Authenticate`), 403 (denied by the ACLs) or 503 (too many
//! password checks at once) before the handler runs, and never says whether a user exists.
//! `docs/security.md` ("HTTP authentication") describes the whole policy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path as FilePath, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::acl::{Operation, ResourceType, ANONYMOUS, CLUSTER_NAME, UNKNOWN_HOST};
use crate::broker::Broker;
use crate::metrics::LogLimiter;
use crate::sasl::{CredentialLookup, Mechanism};

/// Longest `Authorization` header value looked at; real ones are far shorter, and the bound
/// keeps a client from making the broker decode or hash much before it has authenticated.
const MAX_HEADER_BYTES: usize = crate::sasl::MAX_MESSAGE_BYTES;

/// How long a successful password check is remembered (see [`VerifiedCache`]).
const VERIFIED_TTL: Duration = Duration::from_secs(60);
/// Most remembered password checks; past it nothing more is remembered until some expire.
const VERIFIED_MAX: usize = 4_096;
/// Longest a request waits for a password-check slot before it is answered 503.
const CHECK_WAIT: Duration = Duration::from_secs(1);

/// Options of HTTP authentication (flattened into [`crate::config::BrokerOptions`]).
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct HttpAuthOptions {
    /// Whether HTTP clients must authenticate: `off` serves every request as `User:ANONYMOUS`
    /// (ignoring any `Authorization` header); `required` answers 401 to a request without
    /// valid HTTP Basic credentials (a user of `causeway user`) or bearer token.
    #[arg(long, env = "CAUSEWAY_HTTP_AUTH", value_enum, default_value = "off")]
    pub http_auth: HttpAuthMode,
    /// File of bearer tokens, one `PRINCIPAL SHA256HEX` per line (`User:reader 9f86d0...`, the
    /// hex SHA-256 of the token; `#` starts a comment); needs `--http-auth required`.
    #[arg(long, env = "CAUSEWAY_HTTP_BEARER_TOKENS_FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_bearer_tokens_file: Option<PathBuf>,
    /// Also require authentication for `/metrics`, `/healthz` and `/readyz` (any authenticated
    /// principal; no ACL is asked); needs `--http-auth required`.
    #[arg(long, env = "CAUSEWAY_HTTP_AUTH_PROBES", default_value_t = false, action = clap::ArgAction::Set)]
    #[serde(default)]
    pub http_auth_probes: bool,
}

/// Whether HTTP clients authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpAuthMode {
    /// Every request is `User:ANONYMOUS`.
    Off,
    /// Every request but the probes (unless `--http-auth-probes`) carries valid credentials.
    Required,
}

/// What a route needs from its caller.
#[derive(Debug, Clone, Copy)]
pub enum Access {
    /// `/metrics` and the health probes: open, or any authenticated principal with
    /// `--http-auth-probes`.
    Probe,
    /// `operation` on the resource of `resource_type` named by the path parameter `param`.
    Named(ResourceType, Operation, &'static str),
    /// `operation` on the cluster.
    Cluster(Operation),
}

/// Credentials an `Authorization` header carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials {
    /// HTTP Basic (RFC 7617): a user of the broker and its password.
    Basic {
        /// The user name.
        user: String,
        /// The password, as raw bytes.
        password: Vec<u8>,
    },
    /// A bearer token (RFC 6750).
    Bearer(String),
}

impl Credentials {
    /// The metric label of the method.
    fn method(&self) -> &'static str {
        match self {
            Credentials::Basic { .. } => "basic",
            Credentials::Bearer(_) => "bearer",
        }
    }
}

/// Takes an `Authorization` header value apart (scheme names are case-insensitive). Refuses an
/// oversized value, another scheme, Basic credentials that are not base64 of `user:password`
/// with a valid user name and a password, and an empty bearer token.
pub fn parse_authorization(value: &[u8]) -> Result<Credentials, String> {
    if value.len() > MAX_HEADER_BYTES {
        return Err(format!("Authorization header of {} bytes", value.len()));
    }
    let value = std::str::from_utf8(value).map_err(|_| "Authorization is not UTF-8")?;
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| "Basic credentials are not base64")?;
        let colon = decoded
            .iter()
            .position(|&b| b == b':')
            .ok_or("Basic credentials are not user:password")?;
        let user = std::str::from_utf8(&decoded[..colon])
            .map_err(|_| "Basic user name is not UTF-8")?
            .to_string();
        crate::users::validate_user_name(&user)?;
        let password = decoded[colon + 1..].to_vec();
        if password.is_empty() {
            return Err(format!("empty password for user {user:?}"));
        }
        Ok(Credentials::Basic { user, password })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() || rest.contains(char::is_whitespace) {
            return Err("bearer token is empty or has spaces".into());
        }
        Ok(Credentials::Bearer(rest.to_string()))
    } else {
        Err(format!("unsupported Authorization scheme {scheme:?}"))
    }
}

/// One bearer token: the principal it stands for and the SHA-256 of the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerToken {
    /// `User:reader`.
    pub principal: String,
    /// SHA-256 of the token.
    pub hash: [u8; 32],
}

/// Parses a bearer tokens file: one `PRINCIPAL SHA256HEX` per line, blank lines and lines
/// starting with `#` ignored. Refuses (naming the line) a line without exactly two fields, a
/// principal not of the form `Type:name`, a hash that is not 64 hex digits, and a hash given
/// twice (one token cannot stand for two principals).
pub fn parse_tokens(text: &str) -> Result<Vec<BearerToken>, String> {
    let mut tokens: Vec<BearerToken> = Vec::new();
    let mut lines_of: HashMap<[u8; 32], usize> = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [principal, hex] = fields[..] else {
            return Err(format!(
                "line {number}: expected PRINCIPAL SHA256HEX, found {} fields",
                fields.len()
            ));
        };
        match principal.split_once(':') {
            Some((kind, name))
                if !kind.is_empty()
                    && !name.is_empty()
                    && principal.len() <= crate::acl::MAX_FIELD_BYTES
                    && !principal.chars().any(char::is_control) => {}
            _ => {
                return Err(format!(
                "line {number}: principal {principal:?} is not of the form Type:name (User:reader)"
            ))
            }
        }
        let hash = decode_sha256_hex(hex).ok_or_else(|| {
            format!("line {number}: {hex:?} is not 64 hex digits (the SHA-256 of the token)")
        })?;
        if let Some(first) = lines_of.insert(hash, number) {
            return Err(format!(
                "line {number}: the same token hash as line {first}"
            ));
        }
        tokens.push(BearerToken {
            principal: principal.to_string(),
            hash,
        });
    }
    Ok(tokens)
}

/// The 32 bytes 64 hex digits spell, if they do.
fn decode_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    let digits = hex.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (byte, pair) in hash.iter_mut().zip(digits.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        *byte = u8::try_from(high * 16 + low).ok()?;
    }
    Some(hash)
}

/// Password checks that succeeded lately, so a client sending the same Basic credentials on
/// every request pays PBKDF2 once a minute, not every time. Entries are keyed by SHA-256 of a
/// per-process random secret, the user, the password and the user's stored keys: a changed
/// password or a deleted user no longer matches, and what is kept is no cheaper to guess from
/// than the stored credential without the process's secret.
struct VerifiedCache {
    secret: [u8; 32],
    entries: Mutex<HashMap<[u8; 32], Instant>>,
}

impl VerifiedCache {
    fn new() -> VerifiedCache {
        let mut secret = [0u8; 32];
        // Without randomness the cache stays keyed by a constant secret: still bound to the
        // credential, only easier to guess from a memory dump.
        if getrandom::fill(&mut secret).is_err() {
            tracing::warn!("no randomness for the HTTP password cache secret");
        }
        VerifiedCache {
            secret,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, users: &dyn CredentialLookup, user: &str, password: &[u8]) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(self.secret);
        for part in [user.as_bytes(), password] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha512] {
            if let Some(credential) = users.scram(mechanism, user) {
                hash.update(mechanism.name());
                hash.update(&credential.stored_key);
            }
        }
        hash.finalize().into()
    }

    fn contains(&self, key: &[u8; 32]) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .is_some_and(|until| *until > Instant::now())
    }

    fn insert(&self, key: [u8; 32]) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= VERIFIED_MAX {
            entries.retain(|_, until| *until > now);
        }
        if entries.len() < VERIFIED_MAX {
            entries.insert(key, now + VERIFIED_TTL);
        }
    }
}

/// The HTTP listener's authentication state: the options, the bearer tokens, the bound on
/// concurrent password checks and the cache of successful ones.
pub struct HttpAuth {
    mode: HttpAuthMode,
    probes: bool,
    tokens_file: Option<PathBuf>,
    /// Replaced whole by [`HttpAuth::reload_tokens`].
    tokens: RwLock<Arc<Vec<BearerToken>>>,
    /// Password checks (PBKDF2) running at once: half the cores, so a flood of bad Basic
    /// credentials cannot take all the CPU.
    checks: Semaphore,
    verified: VerifiedCache,
    failures_logged: LogLimiter,
}

/// Why a request gets no answer from its handler: the response to send instead.
type Refusal = Box<Response>;

impl HttpAuth {
    /// Checks the options and loads the bearer tokens file; a malformed file is an error naming
    /// the file and the line.
    pub fn load(options: &HttpAuthOptions) -> anyhow::Result<HttpAuth> {
        let required = options.http_auth == HttpAuthMode::Required;
        if !required && options.http_bearer_tokens_file.is_some() {
            anyhow::bail!("--http-bearer-tokens-file needs --http-auth required");
        }
        if !required && options.http_auth_probes {
            anyhow::bail!("--http-auth-probes needs --http-auth required");
        }
        let tokens = match &options.http_bearer_tokens_file {
            Some(path) => load_tokens(path)?,
            None => Vec::new(),
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(HttpAuth {
            mode: options.http_auth,
            probes: options.http_auth_probes,
            tokens_file: options.http_bearer_tokens_file.clone(),
            tokens: RwLock::new(Arc::new(tokens)),
            checks: Semaphore::new((cores / 2).max(1)),
            verified: VerifiedCache::new(),
            failures_logged: LogLimiter::new(),
        })
    }

    /// Reads the bearer tokens file again (on SIGHUP), so tokens are added and revoked without a
    /// restart; a file that does not read or parse leaves the tokens in use and says why.
    /// Returns how many tokens are in use now, or `None` without a tokens file.
    pub fn reload_tokens(&self) -> anyhow::Result<Option<usize>> {
        let Some(path) = &self.tokens_file else {
            return Ok(None);
        };
        let tokens = load_tokens(path)?;
        let count = tokens.len();
        match self.tokens.write() {
            Ok(mut current) => *current = Arc::new(tokens),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(tokens),
        }
        Ok(Some(count))
    }

    /// The tokens loaded last.
    fn current_tokens(&self) -> Arc<Vec<BearerToken>> {
        match self.tokens.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether a route with `access` needs an authenticated caller.
    fn needs_credentials(&self, access: Access) -> bool {
        self.mode == HttpAuthMode::Required && (self.probes || !matches!(access, Access::Probe))
    }

    /// The principal of a request carrying `headers`, or the 401 or 503 to answer.
    async fn authenticate(
        &self,
        broker: &Arc<Broker>,
        headers: &HeaderMap,
        host: &str,
    ) -> Result<String, Refusal> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            crate::metrics::http_authentication("none", false);
            return Err(self.unauthorized());
        };
        let credentials = match parse_authorization(value.as_bytes()) {
            Ok(credentials) => credentials,
            Err(reason) => {
                crate::metrics::http_authentication("none", false);
                self.log_failure(host, "none", &reason);
                return Err(self.unauthorized());
            }
        };
        let method = credentials.method();
        let outcome = match credentials {
            Credentials::Basic { user, password } => {
                let failed = format!("wrong password or unknown user {user:?}");
                let checked = self.check_password(broker, host, user, password).await?;
                checked.ok_or(failed)
            }
            Credentials::Bearer(token) => self
                .token_principal(&token)
                .ok_or_else(|| "unknown bearer token".to_string()),
        };
        match outcome {
            Ok(principal) => {
                crate::metrics::http_authentication(method, true);
                Ok(principal)
            }
            Err(reason) => {
                crate::metrics::http_authentication(method, false);
                self.log_failure(host, method, &reason);
                Err(self.unauthorized())
            }
        }
    }

    /// `User:<user>` when `password` is the user's (a PBKDF2 derivation on a blocking lane, at
    /// most [`HttpAuth::checks`] at once, unless [`VerifiedCache`] remembers it); 503 when no
    /// check slot frees within [`CHECK_WAIT`].
    async fn check_password(
        &self,
        broker: &Arc<Broker>,
        host: &str,
        user: String,
        password: Vec<u8>,
    ) -> Result<Option<String>, Refusal> {
        let key = self.verified.key(&broker.users, &user, &password);
        if self.verified.contains(&key) {
            return Ok(Some(format!("User:{user}")));
        }
        let Ok(Ok(_slot)) = tokio::time::timeout(CHECK_WAIT, self.checks.acquire()).await else {
            crate::metrics::http_authentication("basic", false);
            self.log_failure(host, "basic", "too many password checks at once");
            let mut busy = error(StatusCode::SERVICE_UNAVAILABLE, "too many logins at once");
            busy.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Err(Box::new(busy));
        };
        let checking = broker.clone();
        let name = user.clone();
        let matched = crate::blocking::METADATA
            .run(move || checking.users.plain_matches(&name, &password))
            .await
            .unwrap_or(false);
        if !matched {
            return Ok(None);
        }
        self.verified.insert(key);
        Ok(Some(format!("User:{user}")))
    }

    /// The principal `token` stands for: its SHA-256 compared with every known hash in
    /// constant time.
    fn token_principal(&self, token: &str) -> Option<String> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for known in self.current_tokens().iter() {
            if bool::from(known.hash.ct_eq(&hash)) {
                found = Some(known.principal.clone());
            }
        }
        found
    }

    /// 401 with the schemes the client may use.
    fn unauthorized(&self) -> Refusal {
        let mut response = error(StatusCode::UNAUTHORIZED, "authentication required");
        let headers = response.headers_mut();
        headers.append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Basic realm="causeway", charset="UTF-8""#),
        );
        if !self.current_tokens().is_empty() {
            headers.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="causeway""#),
            );
        }
        Box::new(response)
    }

    fn log_failure(&self, host: &str, method: &str, reason: &str) {
        if self.failures_logged.allow() {
            tracing::warn!(
                host,
                method,
                reason,
                "HTTP authentication failed (further failures within a second are only counted)"
            );
        }
    }
}

/// Reads and parses a bearer tokens file.
fn load_tokens(path: &FilePath) -> anyhow::Result<Vec<BearerToken>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!("reading --http-bearer-tokens-file {}: {e}", path.display())
    })?;
    let tokens = parse_tokens(&text)
        .map_err(|why| anyhow::anyhow!("--http-bearer-tokens-file {}: {why}", path.display()))?;
    if tokens.is_empty() {
        tracing::warn!(file = %path.display(), "the bearer tokens file holds no token");
    }
    Ok(tokens)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// What [`guard`] needs: the broker (users, ACLs, this module's state) and the route's access.
#[derive(Clone)]
pub struct Guard {
    broker: Arc<Broker>,
    access: Access,
}

/// `route` behind a guard that authenticates its caller and authorizes `access` first.
pub fn guarded<S>(broker: &Arc<Broker>, access: Access, route: MethodRouter<S>) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let guard_state = Guard {
        broker: broker.clone(),
        access,
    };
    route.route_layer(axum::middleware::from_fn_with_state(guard_state, guard))
}

/// The middleware of [`guarded`]: 401, 403 or 503 instead of the handler's answer, or the
/// handler's answer.
async fn guard(
    State(guard): State<Guard>,
    params: Option<Path<HashMap<String, String>>>,
    request: Request,
    next: Next,
) -> Response {
    let broker = &guard.broker;
    let auth = &broker.http_auth;
    // Without the peer's address, no host-specific allow applies and every host-specific deny
    // does (`UNKNOWN_HOST`).
    let host = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| UNKNOWN_HOST.to_string(), |info| info.0.ip().to_string());
    let principal = if auth.needs_credentials(guard.access) {
        match auth.authenticate(broker, request.headers(), &host).await {
            Ok(principal) => principal,
            Err(refusal) => return *refusal,
        }
    } else {
        ANONYMOUS.to_string()
    };
    let (resource_type, operation, name) = match guard.access {
        Access::Probe => return next.run(request).await,
        Access::Cluster(operation) => (ResourceType::Cluster, operation, CLUSTER_NAME.to_string()),
        Access::Named(resource_type, operation, param) => {
            match params.as_ref().and_then(|Path(p)| p.get(param)) {
                Some(name) => (resource_type, operation, name.clone()),
                None => {
                    tracing::error!(param, "a guarded route has no such path parameter");
                    return error(StatusCode::INTERNAL_SERVER_ERROR, "route misdeclared");
                }
            }
        }
    };
    if broker
        .acls
        .authorize(&principal, &host, operation, resource_type, &name)
    {
        next.run(request).await
    } else {
        error(StatusCode::FORBIDDEN, "not authorized")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_password: &str) -> Vec<u8> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(user_password);
        format!("Basic {encoded}").into_bytes()
    }

    #[test]
    fn http_auth_header_parsing() {
        assert_eq!(
            parse_authorization(&basic("alice:pa:ss word")),
            Ok(Credentials::Basic {
                user: "alice".into(),
                password: b"pa:ss word".to_vec()
            })
        );
        let lower = basic("bob:pw").to_ascii_lowercase();
        assert!(
            parse_authorization(&lower).is_err(),
            "base64 is case-sensitive"
        );
        let scheme_case = format!("bAsIc {}", &String::from_utf8_lossy(&basic("bob:pw"))[6..]);
        assert!(matches!(
            parse_authorization(scheme_case.as_bytes()),
            Ok(Credentials::Basic { .. })
        ));
        assert_eq!(
            parse_authorization(b"Bearer abc.DEF-123"),
            Ok(Credentials::Bearer("abc.DEF-123".into()))
        );
        for bad in [
            basic("no-colon"),
            basic(":pw"),
            basic("alice:"),
            basic("a/b:pw"),
            b"Basic !!!notbase64".to_vec(),
            b"Basic".to_vec(),
            b"Bearer".to_vec(),
            b"Bearer two tokens".to_vec(),
            b"Digest username=alice".to_vec(),
            b"".to_vec(),
            vec![0xff, 0xfe],
            format!("Bearer {}", "x".repeat(MAX_HEADER_BYTES)).into_bytes(),
        ] {
            assert!(
                parse_authorization(&bad).is_err(),
                "{:?} parsed",
                String::from_utf8_lossy(&bad)
            );
        }
    }

    const HASH_A: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const HASH_B: &str = "60303AE22B998861BCE3B28F33EEC1BE758A213C86C93C076DBE9F558C11C752";

    #[test]
    fn http_auth_token_file_parsing() {
        let tokens = parse_tokens(&format!(
            "# readers\n\nUser:reader {HASH_A}\n  User:ops\t{HASH_B}  \nUser:reader {}\n",
            HASH_A.replace('9', "8")
        ))
        .expect("parses");
        assert_eq!(tokens.len(), 3);
        assert_eq!(tokens[0].principal, "User:reader");
        assert_eq!(
            tokens[0].hash,
            <[u8; 32]>::from(Sha256::digest(b"test")),
            "HASH_A is sha256(\"test\")"
        );
        assert_eq!(tokens[1].principal, "User:ops");
        assert_eq!(parse_tokens("").expect("empty"), vec![]);
        let refusals = [
            (format!("User:reader {HASH_A} extra"), "line 1: expected"),
            ("User:reader\n".to_string(), "line 1: expected"),
            (format!("reader {HASH_A}"), "not of the form Type:name"),
            (format!("User: {HASH_A}"), "not of the form Type:name"),
            (format!("\nUser:r {}", &HASH_A[1..]), "line 2: "),
            (format!("User:r {}g", &HASH_A[1..]), "not 64 hex digits"),
            (format!("User:r {HASH_A}0"), "not 64 hex digits"),
            (
                format!("User:a {HASH_A}\n#\nUser:b {}", HASH_A.to_uppercase()),
                "line 3: the same token hash as line 1",
            ),
        ];
        for (text, expected) in refusals {
            match parse_tokens(&text) {
                Ok(tokens) => panic!("{text:?} parsed as {tokens:?}"),
                Err(why) => assert!(why.contains(expected), "{text:?}: {why}"),
            }
        }
    }

    fn auth(tokens: &str) -> HttpAuth {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, tokens).expect("write");
        HttpAuth::load(&HttpAuthOptions {
            http_auth: HttpAuthMode::Required,
            http_bearer_tokens_file: Some(path),
            http_auth_probes: false,
        })
        .expect("loads")
    }

    #[test]
    fn http_auth_bearer_tokens_map_to_principals() {
        let auth = auth(&format!("User:reader {HASH_A}\n"));
        assert_eq!(auth.token_principal("test").as_deref(), Some("User:reader"));
        assert_eq!(auth.token_principal("test "), None);
        assert_eq!(
            auth.token_principal(HASH_A),
            None,
            "the hash is not the token"
        );
        assert!(auth.needs_credentials(Access::Cluster(Operation::Describe)));
        assert!(!auth.needs_credentials(Access::Probe));
    }

    #[test]
    fn http_auth_unknown_host_gets_no_host_specific_allow_and_every_host_specific_deny() {
        use crate::acl::{AclBinding, PatternType, Permission, ResourcePattern, Rules};
        let binding = |permission, host: &str| AclBinding {
            pattern: ResourcePattern {
                resource_type: ResourceType::Topic,
                name: "t".into(),
                pattern_type: PatternType::Literal,
            },
            principal: "User:alice".into(),
            host: host.into(),
            operation: Operation::Read,
            permission,
        };
        let rules = |bindings: Vec<AclBinding>| Rules {
            bindings: bindings.into_iter().collect(),
            ..Rules::default()
        };
        let read = |rules: &Rules, host| {
            rules.authorize(
                "User:alice",
                host,
                Operation::Read,
                ResourceType::Topic,
                "t",
            )
        };
        let from_one_host = rules(vec![binding(Permission::Allow, "10.0.0.1")]);
        assert!(read(&from_one_host, "10.0.0.1"));
        assert!(!read(&from_one_host, UNKNOWN_HOST));
        let denied_elsewhere = rules(vec![
            binding(Permission::Allow, "*"),
            binding(Permission::Deny, "10.0.0.2"),
        ]);
        assert!(read(&denied_elsewhere, "10.0.0.1"));
        assert!(!read(&denied_elsewhere, "10.0.0.2"));
        assert!(!read(&denied_elsewhere, UNKNOWN_HOST));
        assert!(read(
            &rules(vec![binding(Permission::Allow, "*")]),
            UNKNOWN_HOST
        ));
    }

    #[test]
    fn http_auth_options_that_need_required_are_refused_without_it() {
        let off = HttpAuthOptions {
            http_auth: HttpAuthMode::Off,
            http_bearer_tokens_file: None,
            http_auth_probes: true,
        };
        assert!(HttpAuth::load(&off).is_err());
        let malformed = tempfile::NamedTempFile::new().expect("file");
        std::fs::write(malformed.path(), "User:x nothex\n").expect("write");
        let options = HttpAuthOptions {
            http_auth: HttpAuthMode::Required,
            http_bearer_tokens_file: Some(malformed.path().to_path_buf()),
            http_auth_probes: false,
        };
        let refused = HttpAuth::load(&options)
            .err()
            .expect("malformed file refused");
        assert!(
            refused.to_string().contains("line 1") && refused.to_string().contains("tokens"),
            "{refused}"
        );
    }

    #[test]
    fn http_auth_options_come_from_flags_and_the_config_file() {
        let mut file = tempfile::NamedTempFile::new().expect("file");
        std::io::Write::write_all(
            &mut file,
            b"http_auth = \"required\"\nhttp_bearer_tokens_file = \"/etc/tokens\"\n",
        )
        .expect("write");
        let path = file.path().to_str().expect("utf8");
        let options = crate::config::parse_cli_from(["causeway", "--config", path])
            .expect("parses")
            .serve
            .http_auth;
        assert_eq!(options.http_auth, HttpAuthMode::Required);
        assert_eq!(
            options.http_bearer_tokens_file,
            Some(PathBuf::from("/etc/tokens"))
        );
        assert!(!options.http_auth_probes);
        let flags = crate::config::parse_cli_from([
            "causeway",
            "--http-auth",
            "required",
            "--http-auth-probes",
            "true",
        ])
        .expect("parses")
        .serve
        .http_auth;
        assert!(flags.http_auth_probes);
    }
}
