//! The replicated security state: SCRAM credentials and ACL bindings, so a principal is the
//! same principal in every region. A state-based CRDT exchanged alongside the topic catalog:
//! a map from key to a last-writer-wins register whose value may be a removal (a tombstone),
//! stamped by the writing region's hybrid logical clock. Keys and values are opaque here (the
//! broker names them `scram/<mechanism>/<user>` and `acl/<binding>`); everything is pure.
//!
//! # Semantics, per key
//! - The register with the highest stamp holds. Stamps are `(hlc, region)`; at an equal `hlc`
//!   a removal beats a write, whatever the regions, so a revocation and a grant of one binding
//!   (or a user's deletion and a new password) made at the same instant end revoked.
//! - A removal is kept as a tombstone, so a late copy of the value it removed cannot come back.
//!   Tombstones are a key and a stamp; collecting them is future work, as for topics.
//! - Merge takes the winner of every key, so it is commutative, associative and idempotent
//!   (property-tested), and regions that saw the same writes hold byte-identical states.
//!
//! A local write must be stamped above the key's current stamp ([`CatalogError::StaleStamp`]
//! otherwise): the caller's clock observes [`SecurityCatalog::max_stamp`] after every merge.
//!
//! # Encoding
//! `version=1, count, { key, stamp, (0 | 1 value) }*` with keys strictly increasing; integers
//! are LEB128 varints, strings and byte strings a varint length then the bytes. Decoding accepts
//! only canonical input and checks every length against its bound and the bytes left.

use std::collections::BTreeMap;

use causeway_causal::deps_codec::put_varint;

use crate::topic_catalog::codec::{put_stamp, put_str, Reader};
use crate::topic_catalog::{fnv1a_64, CatalogError, CatalogStamp};

/// Version byte of [`SecurityCatalog::encode`] and [`SecurityEntry::encode`].
pub const SECURITY_ENCODING_VERSION: u8 = 1;

/// Longest key: an ACL binding's encoding (three fields of at most 1 KiB, plus names).
pub const MAX_SECURITY_KEY_LEN: usize = 4096;

/// Longest value: a SCRAM credential is about 100 bytes.
pub const MAX_SECURITY_VALUE_LEN: usize = 4096;

/// One key's register: its value (`None`: removed) and the stamp of the write that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityEntry {
    /// The write's stamp.
    pub stamp: CatalogStamp,
    /// The value, or `None` for a removal.
    pub value: Option<Vec<u8>>,
}

impl SecurityEntry {
    /// The order in which registers win: stamp time, then removal over write, then region, then
    /// the value (two writes of one region never share a stamp; the last rule only makes the
    /// order total).
    fn rank(&self) -> (u64, bool, u32, Option<&[u8]>) {
        (
            self.stamp.hlc,
            self.value.is_none(),
            self.stamp.region,
            self.value.as_deref(),
        )
    }

    /// Whether this register replaces `other` in a merge.
    fn beats(&self, other: &SecurityEntry) -> bool {
        self.rank() > other.rank()
    }

    /// The entry alone (versioned), for storing it under its key.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![SECURITY_ENCODING_VERSION];
        self.encode_body(&mut out);
        out
    }

    /// Reads an entry written by [`SecurityEntry::encode`].
    pub fn decode(bytes: &[u8]) -> Result<SecurityEntry, CatalogError> {
        let mut reader = Reader::new(bytes);
        version(&mut reader)?;
        let entry = SecurityEntry::decode_body(&mut reader)?;
        reader.finish()?;
        Ok(entry)
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        put_stamp(out, self.stamp);
        match &self.value {
            None => out.push(0),
            Some(value) => {
                out.push(1);
                put_varint(value.len() as u64, out);
                out.extend_from_slice(value);
            }
        }
    }

    fn decode_body(reader: &mut Reader) -> Result<SecurityEntry, CatalogError> {
        let stamp = reader.stamp()?;
        let value = match reader.byte()? {
            0 => None,
            1 => Some(reader.bytes(MAX_SECURITY_VALUE_LEN)?),
            _ => return Err(reader.malformed("value flag")),
        };
        Ok(SecurityEntry { stamp, value })
    }
}

fn version(reader: &mut Reader) -> Result<(), CatalogError> {
    match reader.byte()? {
        SECURITY_ENCODING_VERSION => Ok(()),
        other => Err(CatalogError::UnsupportedVersion(other)),
    }
}

/// Every key's register.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityCatalog {
    entries: BTreeMap<String, SecurityEntry>,
}

impl SecurityCatalog {
    /// An empty catalog.
    pub fn new() -> SecurityCatalog {
        SecurityCatalog::default()
    }

    /// Sets (`Some`) or removes (`None`) `key`'s value with a local write stamped `stamp`.
    pub fn write(
        &mut self,
        key: &str,
        value: Option<Vec<u8>>,
        stamp: CatalogStamp,
    ) -> Result<(), CatalogError> {
        check_len("security key", key.len(), MAX_SECURITY_KEY_LEN)?;
        if let Some(value) = &value {
            check_len("security value", value.len(), MAX_SECURITY_VALUE_LEN)?;
        }
        if let Some(current) = self.entries.get(key) {
            if stamp <= current.stamp {
                return Err(CatalogError::StaleStamp {
                    stamp,
                    newest: current.stamp,
                });
            }
        }
        self.entries
            .insert(key.to_string(), SecurityEntry { stamp, value });
        Ok(())
    }

    /// Takes one register from elsewhere (a peer, or storage at start); returns whether it won,
    /// so the caller stores it and applies its value.
    pub fn merge_entry(&mut self, key: &str, theirs: &SecurityEntry) -> bool {
        match self.entries.get(key) {
            Some(ours) if !theirs.beats(ours) => false,
            _ => {
                self.entries.insert(key.to_string(), theirs.clone());
                true
            }
        }
    }

    /// Merges a peer's catalog; returns the keys whose register changed, with their new entries.
    pub fn merge(&mut self, other: &SecurityCatalog) -> Vec<(String, SecurityEntry)> {
        other
            .entries
            .iter()
            .filter(|(key, entry)| self.merge_entry(key, entry))
            .map(|(key, entry)| (key.clone(), entry.clone()))
            .collect()
    }

    /// The value `key` holds, if it holds one.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.entries.get(key)?.value.as_deref()
    }

    /// Every key holding a value, with it, in key order.
    pub fn values(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.entries
            .iter()
            .filter_map(|(key, entry)| Some((key.as_str(), entry.value.as_deref()?)))
    }

    /// Every register, removals included.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &SecurityEntry)> + '_ {
        self.entries
            .iter()
            .map(|(key, entry)| (key.as_str(), entry))
    }

    /// The newest stamp anywhere: the region's clock observes it before its next local write.
    pub fn max_stamp(&self) -> Option<CatalogStamp> {
        self.entries.values().map(|entry| entry.stamp).max()
    }

    /// FNV-1a 64 of [`SecurityCatalog::encode`]: regions exchange catalogs when digests differ.
    pub fn digest(&self) -> u64 {
        fnv1a_64(&self.encode())
    }

    /// The canonical encoding of the whole catalog, for a peer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![SECURITY_ENCODING_VERSION];
        put_varint(self.entries.len() as u64, &mut out);
        for (key, entry) in &self.entries {
            put_str(&mut out, key);
            entry.encode_body(&mut out);
        }
        out
    }

    /// Reads a catalog written by [`SecurityCatalog::encode`]; refuses anything non-canonical.
    pub fn decode(bytes: &[u8]) -> Result<SecurityCatalog, CatalogError> {
        let mut reader = Reader::new(bytes);
        version(&mut reader)?;
        let count = reader.count()?;
        let mut entries = BTreeMap::new();
        let mut previous: Option<String> = None;
        for _ in 0..count {
            let key = reader.string(MAX_SECURITY_KEY_LEN)?;
            if previous.as_ref().is_some_and(|p| *p >= key) {
                return Err(reader.malformed("keys not strictly increasing"));
            }
            let entry = SecurityEntry::decode_body(&mut reader)?;
            previous = Some(key.clone());
            entries.insert(key, entry);
        }
        reader.finish()?;
        Ok(SecurityCatalog { entries })
    }
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), CatalogError> {
    if len > max {
        return Err(CatalogError::TooLong { what, len, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn stamp(hlc: u64, region: u32) -> CatalogStamp {
        CatalogStamp::new(hlc, region)
    }

    #[test]
    fn the_later_write_wins_and_a_removal_wins_a_tie() {
        let mut eu = SecurityCatalog::new();
        let mut us = SecurityCatalog::new();
        eu.write("acl/x", Some(vec![]), stamp(10, 1))
            .expect("grant");
        us.merge(&eu);
        us.write("acl/x", None, stamp(11, 2)).expect("revoke");
        eu.write("acl/y", Some(vec![]), stamp(12, 1))
            .expect("grant");
        eu.merge(&us);
        us.merge(&eu);
        assert_eq!(eu, us);
        assert_eq!(eu.get("acl/x"), None, "the revocation is newer");
        assert_eq!(eu.get("acl/y"), Some(&[][..]));

        let mut a = SecurityCatalog::new();
        let mut b = SecurityCatalog::new();
        a.write("k", Some(b"grant".to_vec()), stamp(20, 9))
            .expect("write");
        b.write("k", None, stamp(20, 1)).expect("remove");
        a.merge(&b);
        b.merge(&a);
        assert_eq!(a, b);
        assert_eq!(a.get("k"), None, "a removal beats a write at the same hlc");
    }

    #[test]
    fn stale_local_writes_and_malformed_encodings_are_refused() {
        let mut catalog = SecurityCatalog::new();
        catalog
            .write("k", Some(vec![1]), stamp(5, 1))
            .expect("write");
        assert!(matches!(
            catalog.write("k", None, stamp(5, 1)),
            Err(CatalogError::StaleStamp { .. })
        ));
        assert!(catalog
            .write(&"k".repeat(MAX_SECURITY_KEY_LEN + 1), None, stamp(9, 1))
            .is_err());
        let bytes = catalog.encode();
        assert_eq!(SecurityCatalog::decode(&bytes), Ok(catalog.clone()));
        for len in 0..bytes.len() {
            assert!(SecurityCatalog::decode(&bytes[..len]).is_err(), "{len}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(SecurityCatalog::decode(&trailing).is_err());
        assert!(SecurityCatalog::decode(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        let entry = SecurityEntry {
            stamp: stamp(7, 3),
            value: None,
        };
        assert_eq!(SecurityEntry::decode(&entry.encode()), Ok(entry));
    }

    fn catalog() -> impl Strategy<Value = SecurityCatalog> {
        prop::collection::vec(
            (
                prop::sample::select(vec!["a", "b", "c"]),
                0u64..4,
                0u32..3,
                prop::option::of(prop::sample::select(vec![vec![1u8], vec![2u8]])),
            ),
            0..6,
        )
        .prop_map(|writes| {
            let mut catalog = SecurityCatalog::new();
            for (key, hlc, region, value) in writes {
                catalog.merge_entry(
                    key,
                    &SecurityEntry {
                        stamp: stamp(hlc, region),
                        value,
                    },
                );
            }
            catalog
        })
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_and_idempotent(
            a in catalog(), b in catalog(), c in catalog()
        ) {
            let merged = |x: &SecurityCatalog, y: &SecurityCatalog| {
                let mut out = x.clone();
                out.merge(y);
                out
            };
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
            prop_assert_eq!(merged(&a, &a), a.clone());
            let decoded = SecurityCatalog::decode(&a.encode());
            prop_assert_eq!(decoded, Ok(a));
        }
    }
}
