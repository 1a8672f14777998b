//! `PLAIN` (RFC 4616): the client's only message is `[authzid] NUL authcid NUL passwd`. The
//! broker keeps no plain passwords, so the password is checked by deriving the user's SCRAM
//! credential from it with the stored salt and iterations and comparing the StoredKey.

use subtle::ConstantTimeEq;

use super::scram::{self, ScramCredential};
use super::{CredentialLookup, Mechanism, Step, MAX_MESSAGE_BYTES, MAX_USERNAME_BYTES};

/// A PLAIN message taken apart.
#[derive(Debug, PartialEq, Eq)]
pub struct PlainMessage<'a> {
    /// The identity to act as; PLAIN in Kafka only allows none or the user itself.
    pub authzid: &'a str,
    /// The user name.
    pub authcid: &'a str,
    /// The password, as raw bytes.
    pub password: &'a [u8],
}

/// Takes a PLAIN message apart, refusing anything but exactly two NULs, an empty user or
/// password, a user name that is not UTF-8 or longer than [`MAX_USERNAME_BYTES`], and an
/// authzid other than empty or the user.
pub fn parse(message: &[u8]) -> Result<PlainMessage<'_>, String> {
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(format!("message of {} bytes", message.len()));
    }
    let mut parts = message.split(|&byte| byte == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("message is not authzid NUL authcid NUL password".to_string());
    };
    let authzid = std::str::from_utf8(authzid).map_err(|_| "authzid is not UTF-8".to_string())?;
    let authcid = std::str::from_utf8(authcid).map_err(|_| "user is not UTF-8".to_string())?;
    if authcid.is_empty() {
        return Err("empty user".to_string());
    }
    if authcid.len() > MAX_USERNAME_BYTES {
        return Err(format!(
            "user name of {} bytes, more than {MAX_USERNAME_BYTES}",
            authcid.len()
        ));
    }
    if password.is_empty() {
        return Err(format!("empty password for user {authcid:?}"));
    }
    if !authzid.is_empty() && authzid != authcid {
        return Err(format!(
            "user {authcid:?} asked to act as a different authzid {authzid:?}"
        ));
    }
    Ok(PlainMessage {
        authzid,
        authcid,
        password,
    })
}

/// The whole PLAIN exchange: one message in, done or failed.
pub(super) fn authenticate(message: &[u8], store: &dyn CredentialLookup) -> Step {
    let parsed = match parse(message) {
        Ok(parsed) => parsed,
        Err(reason) => return Step::Failed(reason),
    };
    if !store.plain_matches(parsed.authcid, parsed.password) {
        return Step::Failed(format!(
            "wrong password or unknown user {:?}",
            parsed.authcid
        ));
    }
    Step::Done {
        principal: parsed.authcid.to_string(),
        response: Vec::new(),
    }
}

/// Whether `password` is `user`'s, by the user's SCRAM credential of either hash: true when
/// some credential the store has for the user derives from `password`. A user without any still
/// costs one derivation, so timing does not tell unknown users from wrong passwords.
///
/// This is the default of [`CredentialLookup::plain_matches`], public so a store that overrides
/// it can still fall back on it.
pub fn matches_scram_credential<S: CredentialLookup + ?Sized>(
    store: &S,
    user: &str,
    password: &[u8],
) -> bool {
    let mut found = false;
    let mut matched = false;
    for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha512] {
        let Some(stored) = store.scram(mechanism, user) else {
            continue;
        };
        found = true;
        if let Ok(derived) =
            ScramCredential::derive(mechanism, password, &stored.salt, stored.iterations)
        {
            matched |= bool::from(derived.stored_key.ct_eq(&stored.stored_key));
        }
    }
    if !found {
        // Same work as for a real user, with an answer that cannot match.
        let _ = ScramCredential::derive(
            Mechanism::ScramSha256,
            password,
            b"causeway unknown user",
            scram::MIN_ITERATIONS,
        );
    }
    matched
}
