//! The per-batch causal metadata that replication fills in (DESIGN.md section 4), and the
//! on-disk format of a segment's `.causal` file.
//!
//! ## `<base>.causal` format (version 0)
//! A sequence of entries, one per batch in the segment's `.log`, in the same order:
//!
//! ```text
//! len   u32 BE   payload length in bytes (bounded by CAUSAL_ENTRY_BYTES_MAX)
//! crc   u32 BE   CRC-32C of the payload
//! payload:
//!   base_offset   i64 BE   base offset of the batch this entry describes
//!   origin_region u32 BE
//!   origin_seq    u64 BE
//!   hlc           u64 BE
//!   deps_count    u32 BE
//!   deps          deps_count x (region u32 BE, seq u64 BE), sorted by region
//! ```
//!
//! A segment created by a roll starts with one *carry* entry whose `base_offset` is below the
//! segment's base: the previous segment's last entry, so `last_causal` survives even if retention
//! deletes the previous segment while the new one is still empty. Recovery reads the longest
//! prefix of entries whose length and CRC check out; a torn or corrupt tail is cut off.

/// Upper bound on one encoded entry, so a corrupt length never triggers a huge allocation.
pub(crate) const CAUSAL_ENTRY_BYTES_MAX: usize = 1 << 20;
const ENTRY_HEADER_BYTES: usize = 8;
const FIXED_PAYLOAD_BYTES: usize = 8 + 4 + 8 + 8 + 4;
const DEP_BYTES: usize = 12;

pub use causeway_causal::CausalMeta;

/// One decoded `.causal` entry: the batch it belongs to and its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CausalEntry {
    /// Base offset of the described batch.
    pub base_offset: i64,
    /// The metadata.
    pub meta: CausalMeta,
}

/// Encodes one entry (header + payload) ready to append to a `.causal` file.
pub(crate) fn encode_entry(base_offset: i64, meta: &CausalMeta) -> Vec<u8> {
    let payload_len = FIXED_PAYLOAD_BYTES + DEP_BYTES * meta.deps.len();
    let mut payload = Vec::with_capacity(payload_len);
    payload.extend_from_slice(&base_offset.to_be_bytes());
    payload.extend_from_slice(&meta.origin_region.to_be_bytes());
    payload.extend_from_slice(&meta.origin_seq.to_be_bytes());
    payload.extend_from_slice(&meta.hlc.to_be_bytes());
    payload.extend_from_slice(&(meta.deps.len() as u32).to_be_bytes());
    for (region, seq) in &meta.deps {
        payload.extend_from_slice(&region.to_be_bytes());
        payload.extend_from_slice(&seq.to_be_bytes());
    }
    let mut out = Vec::with_capacity(ENTRY_HEADER_BYTES + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Takes `N` bytes at `at` if they are there.
fn take<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn decode_payload(p: &[u8]) -> Option<CausalEntry> {
    let base_offset = i64::from_be_bytes(take(p, 0)?);
    let origin_region = u32::from_be_bytes(take(p, 8)?);
    let origin_seq = u64::from_be_bytes(take(p, 12)?);
    let hlc = u64::from_be_bytes(take(p, 20)?);
    let count = u32::from_be_bytes(take(p, 28)?) as usize;
    if p.len() != FIXED_PAYLOAD_BYTES.checked_add(count.checked_mul(DEP_BYTES)?)? {
        return None;
    }
    let mut deps = Vec::with_capacity(count);
    for i in 0..count {
        let at = FIXED_PAYLOAD_BYTES + i * DEP_BYTES;
        deps.push((
            u32::from_be_bytes(take(p, at)?),
            u64::from_be_bytes(take(p, at + 4)?),
        ));
    }
    Some(CausalEntry {
        base_offset,
        meta: CausalMeta {
            origin_region,
            origin_seq,
            hlc,
            deps,
        },
    })
}

/// Decodes the longest valid prefix of a `.causal` file's bytes: the entries with the byte offset
/// just past each one (so the caller can truncate after any entry).
pub(crate) fn decode_prefix(buf: &[u8]) -> Vec<(CausalEntry, u64)> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while let Some(header) = take::<ENTRY_HEADER_BYTES>(buf, pos) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if len > CAUSAL_ENTRY_BYTES_MAX {
            break;
        }
        let start = pos + ENTRY_HEADER_BYTES;
        let Some(payload) = buf.get(start..start + len) else {
            break;
        };
        if crc32c::crc32c(payload) != crc {
            break;
        }
        let Some(entry) = decode_payload(payload) else {
            break;
        };
        pos = start + len;
        out.push((entry, pos as u64));
    }
    out
}

/// Every valid entry of a `.causal` file of `size` bytes (its longest intact prefix), read with
/// one positioned read so it can run beside appends.
pub(crate) fn read_entries(
    file: &std::fs::File,
    size: u64,
    what: &dyn Fn() -> String,
) -> Result<Vec<CausalEntry>, crate::error::StorageError> {
    use crate::error::IoContext;
    use std::os::unix::fs::FileExt;
    let mut bytes = vec![0u8; size as usize];
    file.read_exact_at(&mut bytes, 0).ctx(what)?;
    Ok(decode_prefix(&bytes)
        .into_iter()
        .map(|(entry, _)| entry)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_torn_tail_is_ignored() {
        let a = CausalMeta {
            origin_region: 2,
            origin_seq: 9,
            hlc: 77,
            deps: vec![(1, 4), (2, 9)],
        };
        let mut buf = encode_entry(10, &a);
        let first_len = buf.len() as u64;
        buf.extend_from_slice(&encode_entry(12, &CausalMeta::default()));
        let full = decode_prefix(&buf);
        assert_eq!(full.len(), 2);
        assert_eq!(full[0].0.meta, a);
        assert_eq!(full[0].1, first_len);
        let torn = decode_prefix(&buf[..buf.len() - 3]);
        assert_eq!(torn.len(), 1);
        let mut flipped = buf.clone();
        flipped[buf.len() - 1] ^= 0x40;
        assert_eq!(decode_prefix(&flipped).len(), 1);
    }
}
