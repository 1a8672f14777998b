//! The binary codec of the topic catalog: [`TopicState::encode`] / [`TopicState::decode`],
//! [`TopicCatalog::encode`] / [`TopicCatalog::decode`] and the bounds-checked reader behind the
//! decoders. The layout and its canonical-form rules are described in the module docs of
//! `topic_catalog`; the code lives here so that file reads as the CRDT's semantics.

use std::collections::{BTreeMap, BTreeSet};

use causeway_causal::deps_codec::{get_varint, put_varint, DepsDecodeError};

use super::{
    CatalogError, CatalogStamp, TopicCatalog, TopicState, CATALOG_ENCODING_VERSION,
    MAX_CONFIG_KEY_LEN, MAX_CONFIG_VALUE_LEN, MAX_PARTITIONS, MAX_TOPIC_NAME_LEN,
};

impl TopicState {
    /// The canonical encoding of this topic alone (versioned), for storing it under `topic/<name>`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![CATALOG_ENCODING_VERSION];
        self.encode_body(&mut out);
        out
    }

    /// Reads a state written by [`TopicState::encode`]; refuses anything non-canonical.
    pub fn decode(bytes: &[u8]) -> Result<TopicState, CatalogError> {
        let mut reader = Reader::new(bytes);
        reader.version()?;
        let state = TopicState::decode_body(&mut reader)?;
        reader.finish()?;
        Ok(state)
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        match self.deleted {
            None => out.push(0),
            Some(stamp) => {
                out.push(1);
                put_stamp(out, stamp);
            }
        }
        put_varint(self.creates.len() as u64, out);
        for &stamp in &self.creates {
            put_stamp(out, stamp);
        }
        put_varint(self.partitions.len() as u64, out);
        for &(stamp, count) in &self.partitions {
            put_stamp(out, stamp);
            put_varint(u64::from(count), out);
        }
        put_varint(self.configs.len() as u64, out);
        for (key, (stamp, value)) in &self.configs {
            put_str(out, key);
            put_stamp(out, *stamp);
            match value {
                None => out.push(0),
                Some(value) => {
                    out.push(1);
                    put_str(out, value);
                }
            }
        }
    }

    fn decode_body(reader: &mut Reader<'_>) -> Result<TopicState, CatalogError> {
        let deleted = match reader.byte()? {
            0 => None,
            1 => Some(reader.stamp()?),
            _ => return Err(reader.malformed("bad deleted flag")),
        };
        let above_deleted = |stamp: CatalogStamp| deleted.is_none_or(|deleted| stamp > deleted);

        let mut creates = BTreeSet::new();
        for _ in 0..reader.count()? {
            let stamp = reader.stamp()?;
            if !above_deleted(stamp) || creates.last().is_some_and(|last| *last >= stamp) {
                return Err(reader.malformed("creates not increasing above the delete"));
            }
            creates.insert(stamp);
        }

        let mut partitions = BTreeSet::new();
        let mut previous: Option<(CatalogStamp, u32)> = None;
        for _ in 0..reader.count()? {
            let stamp = reader.stamp()?;
            let count = reader.u32()?;
            let ordered =
                previous.is_none_or(|(p_stamp, p_count)| p_stamp < stamp && p_count > count);
            if !above_deleted(stamp) || !ordered || count == 0 || count > MAX_PARTITIONS {
                return Err(reader.malformed("partition entries not canonical"));
            }
            previous = Some((stamp, count));
            partitions.insert((stamp, count));
        }
        // Each create records its count, so some entry is at or above the newest create.
        if let Some(&newest_create) = creates.last() {
            if previous.is_none_or(|(stamp, _)| stamp < newest_create) {
                return Err(reader.malformed("create without a partition count"));
            }
        }

        let mut configs = BTreeMap::new();
        let mut previous_key: Option<String> = None;
        for _ in 0..reader.count()? {
            let key = reader.string(MAX_CONFIG_KEY_LEN)?;
            let stamp = reader.stamp()?;
            let value = match reader.byte()? {
                0 => None,
                1 => Some(reader.string(MAX_CONFIG_VALUE_LEN)?),
                _ => return Err(reader.malformed("bad config value flag")),
            };
            if !above_deleted(stamp) || previous_key.as_ref().is_some_and(|p| *p >= key) {
                return Err(reader.malformed("config entries not canonical"));
            }
            previous_key = Some(key.clone());
            configs.insert(key, (stamp, value));
        }

        let state = TopicState {
            creates,
            deleted,
            partitions,
            configs,
        };
        if state.is_empty() {
            return Err(reader.malformed("topic state with neither create nor delete"));
        }
        Ok(state)
    }
}

impl TopicCatalog {
    /// The canonical, versioned encoding of the whole catalog (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![CATALOG_ENCODING_VERSION];
        put_varint(self.topics.len() as u64, &mut out);
        for (name, state) in &self.topics {
            put_str(&mut out, name);
            state.encode_body(&mut out);
        }
        out
    }

    /// Reads a catalog written by [`TopicCatalog::encode`]; refuses anything non-canonical.
    pub fn decode(bytes: &[u8]) -> Result<TopicCatalog, CatalogError> {
        let mut reader = Reader::new(bytes);
        reader.version()?;
        let mut topics: BTreeMap<String, TopicState> = BTreeMap::new();
        for _ in 0..reader.count()? {
            let name = reader.string(MAX_TOPIC_NAME_LEN)?;
            if topics
                .last_key_value()
                .is_some_and(|(last, _)| *last >= name)
            {
                return Err(reader.malformed("topic names not increasing"));
            }
            let state = TopicState::decode_body(&mut reader)?;
            topics.insert(name, state);
        }
        reader.finish()?;
        Ok(TopicCatalog { topics })
    }
}

/// A varint byte length, then the UTF-8 bytes; also frames the name hashed by
/// [`super::topic_id`].
pub(crate) fn put_str(out: &mut Vec<u8>, value: &str) {
    put_varint(value.len() as u64, out);
    out.extend_from_slice(value.as_bytes());
}

pub(crate) fn put_stamp(out: &mut Vec<u8>, stamp: CatalogStamp) {
    put_varint(stamp.hlc, out);
    put_varint(u64::from(stamp.region), out);
}

/// A bounds-checked cursor over untrusted bytes.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, offset: 0 }
    }

    pub(crate) fn malformed(&self, reason: &'static str) -> CatalogError {
        CatalogError::Malformed {
            offset: self.offset,
            reason,
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    pub(crate) fn byte(&mut self) -> Result<u8, CatalogError> {
        let byte = *self
            .bytes
            .get(self.offset)
            .ok_or_else(|| self.malformed("truncated"))?;
        self.offset += 1;
        Ok(byte)
    }

    fn version(&mut self) -> Result<(), CatalogError> {
        match self.byte()? {
            CATALOG_ENCODING_VERSION => Ok(()),
            other => Err(CatalogError::UnsupportedVersion(other)),
        }
    }

    /// An unsigned LEB128 varint of at most 10 bytes, in its shortest form (the workspace's one
    /// varint reader, `causeway_causal::deps_codec::get_varint`).
    fn varint(&mut self) -> Result<u64, CatalogError> {
        get_varint(self.bytes, &mut self.offset).map_err(|error| match error {
            DepsDecodeError::Truncated => self.malformed("truncated"),
            _ => self.malformed("overlong varint"),
        })
    }

    fn u32(&mut self) -> Result<u32, CatalogError> {
        let value = self.varint()?;
        u32::try_from(value).map_err(|_| self.malformed("value above u32"))
    }

    /// An element count: every element takes at least one byte, so it cannot exceed what is left.
    pub(crate) fn count(&mut self) -> Result<usize, CatalogError> {
        let count = self.varint()?;
        match usize::try_from(count) {
            Ok(count) if count <= self.remaining() => Ok(count),
            _ => Err(self.malformed("count exceeds the input")),
        }
    }

    pub(crate) fn string(&mut self, max: usize) -> Result<String, CatalogError> {
        let len = self.varint()?;
        let len = match usize::try_from(len) {
            Ok(len) if len <= max && len <= self.remaining() => len,
            _ => return Err(self.malformed("string too long")),
        };
        let bytes = &self.bytes[self.offset..self.offset + len];
        let value = std::str::from_utf8(bytes).map_err(|_| self.malformed("string not UTF-8"))?;
        self.offset += len;
        Ok(value.to_owned())
    }

    /// A byte string of at most `max` bytes.
    pub(crate) fn bytes(&mut self, max: usize) -> Result<Vec<u8>, CatalogError> {
        let len = self.varint()?;
        let len = match usize::try_from(len) {
            Ok(len) if len <= max && len <= self.remaining() => len,
            _ => return Err(self.malformed("byte string too long")),
        };
        let bytes = self.bytes[self.offset..self.offset + len].to_vec();
        self.offset += len;
        Ok(bytes)
    }

    pub(crate) fn stamp(&mut self) -> Result<CatalogStamp, CatalogError> {
        let hlc = self.varint()?;
        let region = self.u32()?;
        Ok(CatalogStamp { hlc, region })
    }

    pub(crate) fn finish(&self) -> Result<(), CatalogError> {
        if self.remaining() != 0 {
            return Err(self.malformed("trailing bytes"));
        }
        Ok(())
    }
}
