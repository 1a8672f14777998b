//! The users SASL clients log in as: per user and SCRAM mechanism, a salted, iterated credential
//! (never a password), kept in the metadata database (`scram/<mechanism>/<user>`) and in memory
//! for the authentication path. Users are this region's own for now: they are not replicated to
//! peer regions (`docs/security.md`, Authentication).

use std::collections::BTreeMap;
use std::sync::RwLock;

use causeway_storage::{Catalog, StorageError};

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
    /// Loads every stored credential; one that does not decode is a corrupt catalog.
    pub fn load(catalog: &Catalog) -> Result<Users, StorageError> {
        let mut credentials = BTreeMap::new();
        for (key, bytes) in catalog.scram_credentials()? {
            let corrupt = |why: String| StorageError::Corrupt(format!("credential {key}: {why}"));
            let (mechanism, user) = key
                .split_once('/')
                .ok_or_else(|| corrupt("no mechanism".into()))?;
            let mechanism = Mechanism::from_name(mechanism)
                .filter(|m| *m != Mechanism::Plain)
                .ok_or_else(|| corrupt("unknown mechanism".into()))?;
            let credential = ScramCredential::decode(&bytes).map_err(corrupt)?;
            credentials.insert((user.to_string(), mechanism.name()), credential);
        }
        Ok(Users {
            credentials: RwLock::new(credentials),
        })
    }

    /// Creates or replaces `user`'s credential for `mechanism` (a SCRAM one), durably first.
    pub fn put(
        &self,
        catalog: &Catalog,
        user: &str,
        mechanism: Mechanism,
        credential: ScramCredential,
    ) -> Result<(), String> {
        validate_user_name(user)?;
        credential.check(mechanism)?;
        let bytes = credential.encode()?;
        catalog
            .put_scram_credential(mechanism.name(), user, &bytes)
            .map_err(|e| e.to_string())?;
        self.write()
            .insert((user.to_string(), mechanism.name()), credential);
        Ok(())
    }

    /// Removes `user`'s credential for `mechanism`; `Ok(false)` when it had none.
    pub fn delete(
        &self,
        catalog: &Catalog,
        user: &str,
        mechanism: Mechanism,
    ) -> Result<bool, String> {
        let key = (user.to_string(), mechanism.name());
        if !self.read().contains_key(&key) {
            return Ok(false);
        }
        catalog
            .delete_scram_credential(mechanism.name(), user)
            .map_err(|e| e.to_string())?;
        self.write().remove(&key);
        Ok(true)
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
        let users = Users::load(&catalog).expect("load");
        let credential = |password: &[u8]| {
            ScramCredential::generate(Mechanism::ScramSha256, password, 4096).expect("credential")
        };
        users
            .put(&catalog, "alice", Mechanism::ScramSha256, credential(b"a"))
            .expect("put");
        users
            .put(&catalog, "bob", Mechanism::ScramSha256, credential(b"b"))
            .expect("put");
        assert!(users
            .put(&catalog, "a/b", Mechanism::ScramSha256, credential(b"c"))
            .is_err());
        assert!(users
            .delete(&catalog, "bob", Mechanism::ScramSha256)
            .expect("delete"));
        assert!(!users
            .delete(&catalog, "bob", Mechanism::ScramSha512)
            .expect("delete"));
        let reloaded = Users::load(&catalog).expect("reload");
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
