//! SCRAM (RFC 5802) with SHA-256 (RFC 7677) or SHA-512, as Kafka runs it: no channel binding,
//! an authzid only if it names the user, the `tokenauth` extension refused (no delegation
//! tokens), iterations between 4096 and 16384. Passwords are used as their raw bytes, without
//! SASLprep, as Kafka does.
//!
//! The exchange is client-first, server-first, client-final, server-final. A user without a
//! credential still gets a server-first, with a salt derived from the user name and a secret,
//! and fails only at client-final, so a client cannot probe which users exist.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use super::{CredentialLookup, Mechanism, MAX_USERNAME_BYTES};

/// Fewest PBKDF2 iterations a credential may have; Kafka's minimum for both hashes.
pub const MIN_ITERATIONS: u32 = 4096;
/// Most PBKDF2 iterations a credential may have; Kafka's maximum for both hashes. Also bounds
/// what a PLAIN attempt costs the broker.
pub const MAX_ITERATIONS: u32 = 16384;
/// Length of the salt [`ScramCredential::generate`] draws, and of unknown users' fake salts.
pub const SALT_BYTES: usize = 32;
/// Longest salt a credential may have, so its length fits the one byte the stored form gives it.
pub const MAX_SALT_BYTES: usize = 255;

/// Version byte of the stored form written by [`ScramCredential::encode`].
const FORMAT_VERSION: u8 = 1;
/// Random bytes in the server's part of the nonce, before base64.
const SERVER_NONCE_BYTES: usize = 24;

/// The hash a SCRAM mechanism runs on.
#[derive(Clone, Copy)]
pub(super) enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    pub(super) fn of(mechanism: Mechanism) -> Result<Hash, String> {
        match mechanism {
            Mechanism::ScramSha256 => Ok(Hash::Sha256),
            Mechanism::ScramSha512 => Ok(Hash::Sha512),
            Mechanism::Plain => Err("PLAIN is not a SCRAM mechanism".to_string()),
        }
    }

    fn output_len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha512 => 64,
        }
    }

    /// RFC 5802's H.
    pub(super) fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// RFC 5802's HMAC, over the concatenation of `parts`.
    pub(super) fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>, String> {
        match self {
            Hash::Sha256 => mac::<Hmac<Sha256>>(key, parts),
            Hash::Sha512 => mac::<Hmac<Sha512>>(key, parts),
        }
    }

    /// RFC 5802's Hi, which is PBKDF2 with this hash's HMAC and one block of output.
    pub(super) fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_len()];
        match self {
            Hash::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out),
            Hash::Sha512 => pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out),
        }
        out
    }
}

/// The hash of a SCRAM `mechanism`, once `salt` and `iterations` are within bounds.
fn checked(mechanism: Mechanism, salt: &[u8], iterations: u32) -> Result<Hash, String> {
    let hash = Hash::of(mechanism)?;
    check_iterations(iterations)?;
    check_salt(salt)?;
    Ok(hash)
}

fn mac<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>, String> {
    // HMAC takes keys of any length; the error is only in the signature.
    let mut mac =
        <M as KeyInit>::new_from_slice(key).map_err(|_| "HMAC refused its key".to_string())?;
    for part in parts {
        mac.update(part);
    }
    Ok(mac.finalize().into_bytes().to_vec())
}

/// What the broker keeps of a SCRAM password: enough to check a client's proof and prove itself
/// back, not enough to log in as the user.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    /// Salt of the PBKDF2 derivation, sent to the client.
    pub salt: Vec<u8>,
    /// PBKDF2 iterations, sent to the client.
    pub iterations: u32,
    /// H(ClientKey): checks the client's proof.
    pub stored_key: Vec<u8>,
    /// Signs the server-final message.
    pub server_key: Vec<u8>,
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("salt_bytes", &self.salt.len())
            .field("iterations", &self.iterations)
            .field("key_bytes", &self.stored_key.len())
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// The credential of `password` for `mechanism` with this salt and iteration count, as the
    /// RFC defines it. Refuses PLAIN, iterations outside Kafka's
    /// [`MIN_ITERATIONS`]..=[`MAX_ITERATIONS`], and an empty or over-long salt.
    pub fn derive(
        mechanism: Mechanism,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<ScramCredential, String> {
        let hash = checked(mechanism, salt, iterations)?;
        let salted_password = hash.hi(password, salt, iterations);
        ScramCredential::from_salted_password(mechanism, &salted_password, salt, iterations)
    }

    /// The credential whose SaltedPassword (RFC 5802's `Hi(password, salt, i)`) is
    /// `salted_password`: what AlterUserScramCredentials carries, so the password itself never
    /// reaches the broker. Refuses a salted password of the wrong length for the hash.
    pub fn from_salted_password(
        mechanism: Mechanism,
        salted_password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<ScramCredential, String> {
        let hash = checked(mechanism, salt, iterations)?;
        if salted_password.len() != hash.output_len() {
            return Err(format!(
                "a salted password of {} bytes for {} (expected {})",
                salted_password.len(),
                mechanism.name(),
                hash.output_len()
            ));
        }
        let client_key = hash.hmac(salted_password, &[b"Client Key"])?;
        let server_key = hash.hmac(salted_password, &[b"Server Key"])?;
        Ok(ScramCredential {
            salt: salt.to_vec(),
            iterations,
            stored_key: hash.digest(&client_key),
            server_key,
        })
    }

    /// A new credential for `password` with a random salt of [`SALT_BYTES`], as when an
    /// operator sets a user's password.
    pub fn generate(
        mechanism: Mechanism,
        password: &[u8],
        iterations: u32,
    ) -> Result<ScramCredential, String> {
        let mut salt = vec![0u8; SALT_BYTES];
        getrandom::fill(&mut salt).map_err(|error| format!("no randomness for a salt: {error}"))?;
        ScramCredential::derive(mechanism, password, &salt, iterations)
    }

    /// Whether this credential can serve `mechanism`: keys of its hash's length, iterations
    /// and salt within bounds. A store could hand back anything; this is checked before use.
    pub fn check(&self, mechanism: Mechanism) -> Result<(), String> {
        let hash = Hash::of(mechanism)?;
        check_iterations(self.iterations)?;
        check_salt(&self.salt)?;
        if self.stored_key.len() != hash.output_len() || self.server_key.len() != hash.output_len()
        {
            return Err(format!(
                "keys of {} and {} bytes for {}, which needs {}",
                self.stored_key.len(),
                self.server_key.len(),
                mechanism.name(),
                hash.output_len()
            ));
        }
        Ok(())
    }

    /// The stored form, version 1:
    ///
    /// ```text
    /// version      1 byte, 1
    /// iterations   4 bytes, big-endian
    /// salt length  1 byte, S in 1..=255
    /// salt         S bytes
    /// key length   1 byte, K: 32 (SHA-256) or 64 (SHA-512)
    /// stored key   K bytes
    /// server key   K bytes
    /// ```
    ///
    /// Refuses a credential that [`ScramCredential::decode`] would refuse.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        check_iterations(self.iterations)?;
        check_salt(&self.salt)?;
        let key_len = self.stored_key.len();
        if !matches!(key_len, 32 | 64) || self.server_key.len() != key_len {
            return Err(format!(
                "keys of {} and {} bytes; both must be 32 or 64",
                key_len,
                self.server_key.len()
            ));
        }
        let mut out = Vec::with_capacity(7 + self.salt.len() + 2 * key_len);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.iterations.to_be_bytes());
        out.push(self.salt.len() as u8);
        out.extend_from_slice(&self.salt);
        out.push(key_len as u8);
        out.extend_from_slice(&self.stored_key);
        out.extend_from_slice(&self.server_key);
        Ok(out)
    }

    /// Reads the form [`ScramCredential::encode`] writes, refusing an unknown version, any
    /// length that does not add up exactly, and values `derive` would not produce.
    pub fn decode(bytes: &[u8]) -> Result<ScramCredential, String> {
        let mut reader = Reader { bytes };
        let version = reader.byte()?;
        if version != FORMAT_VERSION {
            return Err(format!(
                "credential format version {version}, expected {FORMAT_VERSION}"
            ));
        }
        let iterations = u32::from_be_bytes(reader.array()?);
        check_iterations(iterations)?;
        let salt_len = usize::from(reader.byte()?);
        let salt = reader.take(salt_len)?.to_vec();
        check_salt(&salt)?;
        let key_len = usize::from(reader.byte()?);
        if !matches!(key_len, 32 | 64) {
            return Err(format!("key length {key_len}, expected 32 or 64"));
        }
        let stored_key = reader.take(key_len)?.to_vec();
        let server_key = reader.take(key_len)?.to_vec();
        if !reader.bytes.is_empty() {
            return Err(format!("{} bytes after the credential", reader.bytes.len()));
        }
        Ok(ScramCredential {
            salt,
            iterations,
            stored_key,
            server_key,
        })
    }
}

/// Reads the stored form front to back, failing instead of running past its end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < len {
            return Err(format!(
                "credential truncated: {len} bytes needed, {} left",
                self.bytes.len()
            ));
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

pub(super) fn check_iterations(iterations: u32) -> Result<(), String> {
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        return Err(format!(
            "{iterations} iterations, outside {MIN_ITERATIONS}..={MAX_ITERATIONS}"
        ));
    }
    Ok(())
}

fn check_salt(salt: &[u8]) -> Result<(), String> {
    if salt.is_empty() || salt.len() > MAX_SALT_BYTES {
        return Err(format!(
            "salt of {} bytes, outside 1..={MAX_SALT_BYTES}",
            salt.len()
        ));
    }
    Ok(())
}

/// The server's part of a nonce: random bytes in base64, which has no `,`.
pub(super) fn random_nonce() -> Result<String, String> {
    let mut bytes = [0u8; SERVER_NONCE_BYTES];
    getrandom::fill(&mut bytes).map_err(|error| format!("no randomness for a nonce: {error}"))?;
    Ok(BASE64.encode(bytes))
}

/// One SCRAM exchange between server-first and client-final: what the final check needs.
pub(super) struct Exchange {
    hash: Hash,
    user: String,
    known_user: bool,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    /// The client's nonce followed by `nonce`: what librdkafka before 2.6.1 (Debian's kcat)
    /// echoes in client-final (confluentinc/librdkafka#4895); accepted as well, since it holds
    /// the whole server nonce and the proof covers the message as sent.
    librdkafka_nonce: String,
    credential: ScramCredential,
}

/// Takes client-first and answers server-first.
pub(super) fn client_first(
    mechanism: Mechanism,
    input: &[u8],
    store: &dyn CredentialLookup,
    secret: &[u8; 32],
    server_nonce: String,
) -> Result<(Exchange, String), String> {
    let hash = Hash::of(mechanism)?;
    let message = text("client-first", input)?;
    let (flag, rest) = message
        .split_once(',')
        .ok_or("client-first without a gs2 header")?;
    match flag {
        "n" => {}
        "y" => return Err("client-first with channel binding flag y".to_string()),
        _ if flag.starts_with("p=") => {
            return Err("client-first asks for channel binding, not offered".to_string())
        }
        _ => return Err(format!("client-first with gs2 flag {flag:?}")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or("client-first gs2 header without its second comma")?;
    let authzid = match authzid {
        "" => String::new(),
        _ => match authzid.strip_prefix("a=") {
            Some(name) => unescape_name(name)?,
            None => return Err(format!("client-first gs2 authzid {authzid:?}")),
        },
    };
    let gs2_header = &message[..message.len() - bare.len()];

    let mut attributes = bare.split(',');
    let user = attributes.next().unwrap_or_default();
    if user.starts_with("m=") {
        return Err("client-first with a mandatory extension".to_string());
    }
    let user = user
        .strip_prefix("n=")
        .ok_or("client-first without n=user")?;
    let user = unescape_name(user)?;
    if user.is_empty() {
        return Err("client-first with an empty user".to_string());
    }
    if user.len() > MAX_USERNAME_BYTES {
        return Err(format!(
            "user name of {} bytes, more than {MAX_USERNAME_BYTES}",
            user.len()
        ));
    }
    let client_nonce = attributes
        .next()
        .and_then(|attribute| attribute.strip_prefix("r="))
        .ok_or("client-first without r=nonce")?;
    if client_nonce.is_empty()
        || !client_nonce
            .bytes()
            .all(|byte| (0x21..=0x7e).contains(&byte) && byte != b',')
    {
        return Err("client-first with an empty or unprintable nonce".to_string());
    }
    for extension in attributes {
        let (key, value) = extension
            .split_once('=')
            .ok_or_else(|| format!("client-first extension {extension:?} without a value"))?;
        match key {
            "tokenauth" if value.eq_ignore_ascii_case("true") => {
                return Err(format!(
                    "user {user:?} offered a delegation token, not supported"
                ))
            }
            "tokenauth" => {}
            _ => return Err(format!("client-first with unsupported extension {key:?}")),
        }
    }
    if !authzid.is_empty() && authzid != user {
        return Err(format!(
            "user {user:?} asked to act as a different authzid {authzid:?}"
        ));
    }

    let (credential, known_user) = match store.scram(mechanism, &user) {
        Some(credential) => {
            credential
                .check(mechanism)
                .map_err(|reason| format!("stored credential of user {user:?}: {reason}"))?;
            (credential, true)
        }
        None => (fake_credential(hash, mechanism, secret, &user)?, false),
    };
    let nonce = format!("{client_nonce}{server_nonce}");
    let librdkafka_nonce = format!("{client_nonce}{nonce}");
    let server_first = format!(
        "r={nonce},s={},i={}",
        BASE64.encode(&credential.salt),
        credential.iterations
    );
    let exchange = Exchange {
        hash,
        user,
        known_user,
        gs2_header: gs2_header.to_string(),
        client_first_bare: bare.to_string(),
        server_first: server_first.clone(),
        nonce,
        librdkafka_nonce,
        credential,
    };
    Ok((exchange, server_first))
}

/// What an unknown user is answered with: a salt that stays the same for the same user (while
/// the secret does), [`MIN_ITERATIONS`] (Kafka's default), and keys no proof can match.
fn fake_credential(
    hash: Hash,
    mechanism: Mechanism,
    secret: &[u8; 32],
    user: &str,
) -> Result<ScramCredential, String> {
    let derive = |purpose: &[u8]| {
        Hash::Sha512.hmac(
            secret,
            &[purpose, mechanism.name().as_bytes(), b"\0", user.as_bytes()],
        )
    };
    let mut salt = derive(b"causeway scram fake salt\0")?;
    salt.truncate(SALT_BYTES);
    let mut stored_key = derive(b"causeway scram fake stored key\0")?;
    stored_key.truncate(hash.output_len());
    let mut server_key = derive(b"causeway scram fake server key\0")?;
    server_key.truncate(hash.output_len());
    Ok(ScramCredential {
        salt,
        iterations: MIN_ITERATIONS,
        stored_key,
        server_key,
    })
}

impl Exchange {
    /// The user named in client-first.
    pub(super) fn user(&self) -> &str {
        &self.user
    }

    /// Takes client-final and answers server-final when the proof holds.
    pub(super) fn client_final(&self, input: &[u8]) -> Result<String, String> {
        let message = text("client-final", input)?;
        let (without_proof, proof) = message
            .rsplit_once(",p=")
            .ok_or("client-final without p=proof")?;
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix("c="))
            .ok_or("client-final without c=binding")?;
        let binding = BASE64
            .decode(binding)
            .map_err(|_| "client-final c= is not base64".to_string())?;
        if binding != self.gs2_header.as_bytes() {
            return Err("client-final c= is not the gs2 header of client-first".to_string());
        }
        let nonce = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix("r="))
            .ok_or("client-final without r=nonce")?;
        if nonce != self.nonce && nonce != self.librdkafka_nonce {
            return Err(format!(
                "client-final nonce is not the one of server-first (user {:?})",
                self.user
            ));
        }
        for extension in attributes {
            // Extensions of client-final mean nothing to Kafka; they only have to be well formed.
            if extension
                .split_once('=')
                .is_none_or(|(key, _)| key.is_empty())
            {
                return Err(format!(
                    "client-final attribute {extension:?} without a value"
                ));
            }
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| "client-final p= is not base64".to_string())?;
        if proof.len() != self.hash.output_len() {
            return Err(format!(
                "client-final proof of {} bytes, expected {}",
                proof.len(),
                self.hash.output_len()
            ));
        }

        let auth_message: [&[u8]; 5] = [
            self.client_first_bare.as_bytes(),
            b",",
            self.server_first.as_bytes(),
            b",",
            without_proof.as_bytes(),
        ];
        let client_signature = self.hash.hmac(&self.credential.stored_key, &auth_message)?;
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(proof, signature)| proof ^ signature)
            .collect();
        let proof_holds = bool::from(
            self.hash
                .digest(&client_key)
                .ct_eq(&self.credential.stored_key),
        );
        if !self.known_user {
            return Err(format!("unknown user {:?}", self.user));
        }
        if !proof_holds {
            return Err(format!("wrong password for user {:?}", self.user));
        }
        let server_signature = self.hash.hmac(&self.credential.server_key, &auth_message)?;
        Ok(format!("v={}", BASE64.encode(server_signature)))
    }
}

/// A SCRAM message as text: UTF-8, not empty, no NUL.
fn text<'a>(what: &str, input: &'a [u8]) -> Result<&'a str, String> {
    let message = std::str::from_utf8(input).map_err(|_| format!("{what} is not UTF-8"))?;
    if message.is_empty() || message.contains('\0') {
        return Err(format!("{what} is empty or holds a NUL"));
    }
    Ok(message)
}

/// A saslname with `=2C` and `=3D` turned back into `,` and `=`; any other `=` is malformed.
fn unescape_name(name: &str) -> Result<String, String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3);
        match escape {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(format!("user name {name:?} with a bad = escape")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}
