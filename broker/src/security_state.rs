//! This region's copy of the replicated security state (users' SCRAM credentials, ACL
//! bindings, client quotas and consumer groups' configs,
//! `causeway_replication::security_catalog`): every local change is stamped with the region's
//! clock and stored durably before it is applied, and a peer's state is merged the same way, so
//! a user created or a grant revoked in one region holds in all of them. [`crate::users::Users`],
//! [`crate::acl::store::Acls`], [`crate::quota::Quotas`] and
//! [`crate::group_configs::GroupConfigs`] keep the request path's views of it.

use std::sync::{Mutex, MutexGuard};

use causeway_replication::security_catalog::{
    SecurityCatalog, SecurityEntry, MAX_SECURITY_KEY_LEN, MAX_SECURITY_VALUE_LEN,
};
use causeway_replication::{CatalogStamp, HybridClock};
use causeway_storage::{Catalog, StorageError};

use crate::wall_clock::now_ms;

/// One change of the security state: a key and its new value (`None`: removed).
pub type SecurityChange = (String, Option<Vec<u8>>);

/// Key prefix of a user's SCRAM credential (`scram/<mechanism>/<user>`).
pub const SCRAM_KEY_PREFIX: &str = "scram/";

/// Key prefix of an ACL binding (`acl/<binding>`).
pub const ACL_KEY_PREFIX: &str = "acl/";

/// Key prefix of a client quota value (`quota/<entity>/<key>`, [`crate::quota`]).
pub const QUOTA_KEY_PREFIX: &str = "quota/";

/// Key prefix of a group config value (`group-config/<name>/<group>`, [`crate::group_configs`]).
pub const GROUP_CONFIG_KEY_PREFIX: &str = "group-config/";

/// The replicated security state and the clock that stamps this region's changes to it.
pub struct SecurityStore {
    inner: Mutex<Inner>,
    /// A peer's state stamped further ahead of the wall clock waits (as its topic catalog does).
    skew_ms_max: u64,
}

struct Inner {
    state: SecurityCatalog,
    clock: HybridClock,
    region: u32,
}

impl Inner {
    fn stamp(&mut self) -> CatalogStamp {
        let wall = u64::try_from(now_ms()).unwrap_or(0);
        CatalogStamp::new(self.clock.tick(wall), self.region)
    }
}

impl SecurityStore {
    /// Loads the stored state; credentials stored before users were replicated are moved into
    /// it (stamped now).
    pub fn load(
        catalog: &Catalog,
        region: u32,
        skew_ms_max: u64,
    ) -> Result<SecurityStore, StorageError> {
        let mut state = SecurityCatalog::new();
        for (key, bytes) in catalog.security_entries()? {
            let entry = SecurityEntry::decode(&bytes)
                .map_err(|e| StorageError::Corrupt(format!("security state {key}: {e}")))?;
            state.merge_entry(&key, &entry);
        }
        let clock = HybridClock::resume(state.max_stamp().map_or(0, |s| s.hlc));
        let store = SecurityStore {
            inner: Mutex::new(Inner {
                state,
                clock,
                region,
            }),
            skew_ms_max,
        };
        let legacy = catalog.legacy_scram_credentials()?;
        if !legacy.is_empty() {
            let changes: Vec<SecurityChange> = legacy
                .iter()
                .map(|(key, bytes)| (format!("{SCRAM_KEY_PREFIX}{key}"), Some(bytes.clone())))
                .collect();
            store
                .write(catalog, &changes)
                .map_err(|e| StorageError::Corrupt(format!("moving SCRAM credentials: {e}")))?;
            let keys: Vec<String> = legacy.into_iter().map(|(key, _)| key).collect();
            catalog.drop_legacy_scram_credentials(&keys)?;
            tracing::info!(
                credentials = keys.len(),
                "moved SCRAM credentials into the replicated security state"
            );
        }
        Ok(store)
    }

    /// Stamps, stores (one synchronous write) and applies local changes, in order.
    pub fn write(&self, catalog: &Catalog, changes: &[SecurityChange]) -> Result<(), String> {
        for (key, value) in changes {
            if key.len() > MAX_SECURITY_KEY_LEN
                || value
                    .as_ref()
                    .is_some_and(|v| v.len() > MAX_SECURITY_VALUE_LEN)
            {
                return Err(format!(
                    "a security key has at most {MAX_SECURITY_KEY_LEN} bytes and a value at most \
                     {MAX_SECURITY_VALUE_LEN}"
                ));
            }
        }
        let mut inner = self.lock();
        let entries: Vec<(String, SecurityEntry)> = changes
            .iter()
            .map(|(key, value)| {
                let entry = SecurityEntry {
                    stamp: inner.stamp(),
                    value: value.clone(),
                };
                (key.clone(), entry)
            })
            .collect();
        let stored: Vec<(String, Vec<u8>)> = entries
            .iter()
            .map(|(key, entry)| (key.clone(), entry.encode()))
            .collect();
        catalog
            .put_security_entries(&stored)
            .map_err(|e| e.to_string())?;
        for (key, entry) in entries {
            inner.state.merge_entry(&key, &entry);
        }
        Ok(())
    }

    /// Every value under `prefix`, keyed by the rest of the key.
    pub fn values_under(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        self.lock()
            .state
            .values()
            .filter_map(|(key, value)| {
                Some((key.strip_prefix(prefix)?.to_string(), value.to_vec()))
            })
            .collect()
    }

    /// Whether `key` holds a value.
    pub fn contains(&self, key: &str) -> bool {
        self.lock().state.get(key).is_some()
    }

    /// The digest peers compare before sending their state.
    pub fn digest(&self) -> u64 {
        self.lock().state.digest()
    }

    /// The whole state, encoded for a peer.
    pub fn encode(&self) -> Vec<u8> {
        self.lock().state.encode()
    }

    /// Merges a peer's encoded state: the registers it wins are stored (one synchronous write)
    /// and returned, for the views to apply. A state stamped beyond the clock skew bound waits.
    pub fn merge_peer(
        &self,
        catalog: &Catalog,
        bytes: &[u8],
    ) -> Result<Vec<SecurityChange>, String> {
        let theirs = SecurityCatalog::decode(bytes).map_err(|e| e.to_string())?;
        let mut inner = self.lock();
        if let Some(newest) = theirs.max_stamp() {
            let stamp_ms = HybridClock::physical_ms(newest.hlc);
            let wall_ms = u64::try_from(now_ms()).unwrap_or(0);
            if stamp_ms > wall_ms.saturating_add(self.skew_ms_max) {
                crate::metrics::replication_refused("security state clock skew");
                return Ok(Vec::new());
            }
            inner.clock.observe(newest.hlc);
        }
        let mut merged = inner.state.clone();
        let won = merged.merge(&theirs);
        if won.is_empty() {
            return Ok(Vec::new());
        }
        let stored: Vec<(String, Vec<u8>)> = won
            .iter()
            .map(|(key, entry)| (key.clone(), entry.encode()))
            .collect();
        catalog
            .put_security_entries(&stored)
            .map_err(|e| e.to_string())?;
        inner.state = merged;
        Ok(won
            .into_iter()
            .map(|(key, entry)| (key, entry.value))
            .collect())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_survive_a_reload_and_a_peer_state_merges_once() {
        let dir = tempfile::TempDir::new().expect("dir");
        let catalog = Catalog::open(dir.path()).expect("catalog");
        let eu = SecurityStore::load(&catalog, 1, 60_000).expect("load");
        eu.write(
            &catalog,
            &[
                ("acl/a".into(), Some(vec![])),
                ("scram/x/alice".into(), Some(vec![7])),
            ],
        )
        .expect("write");
        eu.write(&catalog, &[("acl/a".into(), None)])
            .expect("remove");
        let reloaded = SecurityStore::load(&catalog, 1, 60_000).expect("reload");
        assert_eq!(reloaded.digest(), eu.digest());
        assert!(!reloaded.contains("acl/a"));
        assert_eq!(
            reloaded.values_under("scram/"),
            vec![("x/alice".into(), vec![7])]
        );

        let other_dir = tempfile::TempDir::new().expect("dir");
        let other_catalog = Catalog::open(other_dir.path()).expect("catalog");
        let us = SecurityStore::load(&other_catalog, 2, 60_000).expect("load");
        let changed = us.merge_peer(&other_catalog, &eu.encode()).expect("merge");
        assert_eq!(changed.len(), 2, "{changed:?}");
        assert!(us
            .merge_peer(&other_catalog, &eu.encode())
            .expect("merge")
            .is_empty());
        assert_eq!(us.digest(), eu.digest());
        let reloaded = SecurityStore::load(&other_catalog, 2, 60_000).expect("reload");
        assert_eq!(
            reloaded.digest(),
            eu.digest(),
            "merged registers are stored"
        );
        assert!(us.merge_peer(&other_catalog, b"junk").is_err());
    }
}
