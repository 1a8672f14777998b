//! The users SASL clients log in as: per user and SCRAM mechanism, a salted, iterated credential
//! (never a password), kept in the replicated security state (`scram/<mechanism>/<user>`,
//! [`crate::security_state`]), so a user created in one region logs in in every region, and in
//! memory for the authentication path.

use std::collections::BTreeMap;
use std::sync::RwLock;

use causeway_storage::{Catalog, StorageError};

use crate::security_state::{SecurityStore, SCRAM_KEY_PREFIX};

use crate::sasl::{CredentialLookup, Mechanism, ScramCredential};

/// Every user's SCRAM credentials, loaded at start and written through to the catalog.
#[derive(Default)]
pub struct Users {
    credentials: RwLock<BTreeMap<(String, &'static str), ScramCredential>>,
}

/// A user and the SCRAM mechanisms it has a credential for, with their iteration counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    /// The user name.
    pub name: String,
    /// `(mechanism, iterations)` per credential.
    pub mechanisms: Vec<(Mechanism, u32)>,
}

impl Users {
    /// Loads every credential of the security state; one that does not decode is corrupt.
    pub fn load(security: &SecurityStore) -> Result<Users, StorageError> {
        let mut credentials = BTreeMap::new();
        for (key, bytes) in security.values_under(SCRAM_KEY_PREFIX) {
            let ((user, mechanism), credential) = parse(&key, &bytes)
                .map_err(|why| StorageError::Corrupt(format!("credential {key}: {why}")))?;
            credentials.insert((user, mechanism), credential);
        }
        Ok(Users {
            credentials: RwLock::new(credentials),
        })
    }

    /// Creates or replaces `user`'s credential for `mechanism` (a SCRAM one), durably first.
    pub fn put(
        &self,
        security: &SecurityStore,
        catalog: &Catalog,
        user: &str,
        mechanism: Mechanism,
        credential: ScramCredential,
    ) -> Result<(), String> {
        validate_user_name(user)?;
        credential.check(mechanism)?;
        let bytes = credential.encode()?;
        security.write(catalog, &[(key_of(mechanism, user), Some(bytes))])?;
        self.write()
            .insert((user.to_string(), mechanism.name()), credential);
        Ok(())
    }

    /// Removes `user`'s credential for `mechanism`; `Ok(false)` when it had none.
    pub fn delete(
        &self,
        security: &SecurityStore,
        catalog: &Catalog,
        user: &str,
        mechanism: Mechanism,
    ) -> Result<bool, String> {
        let key = (user.to_string(), mechanism.name());
        if !self.read().contains_key(&key) {
            return Ok(false);
        }
        security.write(catalog, &[(key_of(mechanism, user), None)])?;
        self.write().remove(&key);
        Ok(true)
    }

    /// Follows a change a peer region made (`rest` is the key after `scram/`); a credential that
    /// does not decode is logged and ignored.
    pub fn apply(&self, rest: &str, value: Option<&[u8]>) {
        let Some(bytes) = value else {
            if let Some((mechanism, user)) = rest.split_once('/') {
                if let Some(mechanism) = Mechanism::from_name(mechanism) {
                    self.write().remove(&(user.to_string(), mechanism.name()));
                }
            }
            return;
        };
        match parse(rest, bytes) {
            Ok((key, credential)) => {
                self.write().insert(key, credential);
            }
            Err(why) => tracing::warn!(key = rest, %why, "ignoring a peer's SCRAM credential"),
        }
    }

    /// Every user with at least one credential, by name.
    pub fn list(&self) -> Vec<UserSummary> {
        let mut users: Vec<UserSummary> = Vec::new();
        for ((name, mechanism), credential) in self.read().iter() {
            let Some(mechanism) = Mechanism::from_name(mechanism) else {
                continue;
            };
            match users.last_mut() {
                Some(last) if last.name == *name => {
                    last.mechanisms.push((mechanism, credential.iterations));
                }
                _ => users.push(UserSummary {
                    name: name.clone(),
                    mechanisms: vec![(mechanism, credential.iterations)],
                }),
            }
        }
        users
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<(String, &'static str), ScramCredential>> {
        self.credentials.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<(String, &'static str), ScramCredential>> {
        self.credentials.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl CredentialLookup for Users {
    fn scram(&self, mechanism: Mechanism, user: &str) -> Option<ScramCredential> {
        self.read()
            .get(&(user.to_string(), mechanism.name()))
            .cloned()
    }
}

/// The security state's key of `user`'s credential for `mechanism`.
fn key_of(mechanism: Mechanism, user: &str) -> String {
    format!("{SCRAM_KEY_PREFIX}{}/{user}", mechanism.name())
}

/// Reads a stored credential keyed `<mechanism>/<user>`.
fn parse(key: &str, bytes: &[u8]) -> Result<((String, &'static str), ScramCredential), String> {
    let (mechanism, user) = key.split_once('/').ok_or("no mechanism")?;
    let mechanism = Mechanism::from_name(mechanism)
        .filter(|m| *m != Mechanism::Plain)
        .ok_or("unknown mechanism")?;
    validate_user_name(user)?;
    let credential = ScramCredential::decode(bytes)?;
    credential.check(mechanism)?;
    Ok(((user.to_string(), mechanism.name()), credential))
}

/// A user name must be something a SCRAM client can send and a catalog key can hold: 1 to 255
/// bytes, no control characters, no `/` (the key separator).
pub fn validate_user_name(user: &str) -> Result<(), String> {
    if user.is_empty() || user.len() > crate::sasl::MAX_USERNAME_BYTES {
        return Err(format!(
            "a user name has 1 to {} bytes",
            crate::sasl::MAX_USERNAME_BYTES
        ));
    }
    if user.chars().any(|c| c.is_control() || c == '/') {
        return Err("a user name has no control characters and no '/'".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_survive_a_reload_and_deletes_stay_deleted() {
        let dir = tempfile::TempDir::new().expect("dir");
        let catalog = Catalog::open(dir.path()).expect("catalog");
        let security = SecurityStore::load(&catalog, 1, 60_000).expect("security");
        let users = Users::load(&security).expect("load");
        let credential = |password: &[u8]| {
            ScramCredential::generate(Mechanism::ScramSha256, password, 4096).expect("credential")
        };
        users
            .put(
                &security,
                &catalog,
                "alice",
                Mechanism::ScramSha256,
                credential(b"a"),
            )
            .expect("put");
        users
            .put(
                &security,
                &catalog,
                "bob",
                Mechanism::ScramSha256,
                credential(b"b"),
            )
            .expect("put");
        assert!(users
            .put(
                &security,
                &catalog,
                "a/b",
                Mechanism::ScramSha256,
                credential(b"c")
            )
            .is_err());
        assert!(users
            .delete(&security, &catalog, "bob", Mechanism::ScramSha256)
            .expect("delete"));
        assert!(!users
            .delete(&security, &catalog, "bob", Mechanism::ScramSha512)
            .expect("delete"));
        let security = SecurityStore::load(&catalog, 1, 60_000).expect("security");
        let reloaded = Users::load(&security).expect("reload");
        assert_eq!(
            reloaded.list(),
            vec![UserSummary {
                name: "alice".into(),
                mechanisms: vec![(Mechanism::ScramSha256, 4096)]
            }]
        );
        assert!(reloaded.plain_matches("alice", b"a"));
        assert!(!reloaded.plain_matches("alice", b"b"));
        assert!(reloaded.scram(Mechanism::ScramSha256, "bob").is_none());
    }
}
