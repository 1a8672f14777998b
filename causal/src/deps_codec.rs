//! Wire encodings of a batch's dependency vector, so the replication stream pays O(changed
//! entries) bytes per batch instead of 12 bytes per region (DESIGN.md section 4: "delta-encode it
//! on the wire"). Three encodings, all of a sorted `(region, seq)` list with no zero entries:
//!
//! - **fixed**: the storage `.causal` layout, `count u32 BE` then `count x (u32 BE, u64 BE)`;
//! - **varint**: `count`, then `count x (region, seq)`, all LEB128 varints;
//! - **delta**: against the previous batch's vector in the same stream (the empty vector for the
//!   first): `changed` then `changed x (region, zigzag(seq - previous seq))`, LEB128; a region
//!   that disappears is encoded as a change to 0. Successive batches in one log share most
//!   entries, so most batches change one or two.
//!
//! Decoders bound the entry count before allocating and reject truncated or overlong input.

/// Most dependency entries a decoder accepts (regions in a deployment are far fewer).
pub const DEPS_ENTRIES_MAX: usize = 1024;

/// Why a dependency vector did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepsDecodeError {
    /// The input ended inside the vector.
    Truncated,
    /// A varint longer than 10 bytes or overflowing 64 bits.
    Overlong,
    /// More entries than [`DEPS_ENTRIES_MAX`], or a region id beyond 32 bits.
    OutOfBounds,
    /// Entries not strictly sorted by region, or a zero sequence where none may be.
    NotCanonical,
}

impl std::fmt::Display for DepsDecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DepsDecodeError::Truncated => "dependency vector truncated",
            DepsDecodeError::Overlong => "dependency vector has an overlong varint",
            DepsDecodeError::OutOfBounds => "dependency vector out of bounds",
            DepsDecodeError::NotCanonical => "dependency vector not canonical",
        })
    }
}

impl std::error::Error for DepsDecodeError {}

/// Appends the fixed (storage) encoding of `deps` to `out`.
pub fn encode_fixed(deps: &[(u32, u64)], out: &mut Vec<u8>) {
    out.extend_from_slice(&(deps.len() as u32).to_be_bytes());
    for (region, seq) in deps {
        out.extend_from_slice(&region.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
    }
}

/// Appends the varint encoding of `deps` to `out`.
pub fn encode_varint(deps: &[(u32, u64)], out: &mut Vec<u8>) {
    put_varint(deps.len() as u64, out);
    for &(region, seq) in deps {
        put_varint(u64::from(region), out);
        put_varint(seq, out);
    }
}

/// Decodes a varint-encoded vector from the start of `buf`; returns it and the bytes used.
pub fn decode_varint(buf: &[u8]) -> Result<(Vec<(u32, u64)>, usize), DepsDecodeError> {
    let mut at = 0;
    let count = bounded_count(get_varint(buf, &mut at)?)?;
    let mut deps = Vec::with_capacity(count);
    for _ in 0..count {
        let region = region_of(get_varint(buf, &mut at)?)?;
        let seq = get_varint(buf, &mut at)?;
        if seq == 0 || deps.last().is_some_and(|&(r, _)| r >= region) {
            return Err(DepsDecodeError::NotCanonical);
        }
        deps.push((region, seq));
    }
    Ok((deps, at))
}

/// Appends the encoding of `deps` relative to `previous` (the prior batch's vector in the same
/// stream) to `out`.
pub fn encode_delta(previous: &[(u32, u64)], deps: &[(u32, u64)], out: &mut Vec<u8>) {
    let changes = changes(previous, deps);
    put_varint(changes.len() as u64, out);
    for (region, before, after) in changes {
        put_varint(u64::from(region), out);
        put_varint(zigzag(after.wrapping_sub(before) as i64), out);
    }
}

/// Decodes a vector encoded by [`encode_delta`] against the same `previous`; returns it and the
/// bytes used.
pub fn decode_delta(
    previous: &[(u32, u64)],
    buf: &[u8],
) -> Result<(Vec<(u32, u64)>, usize), DepsDecodeError> {
    let mut at = 0;
    let count = bounded_count(get_varint(buf, &mut at)?)?;
    let mut result: Vec<(u32, u64)> = previous.to_vec();
    let mut last_region: Option<u32> = None;
    for _ in 0..count {
        let region = region_of(get_varint(buf, &mut at)?)?;
        if last_region.is_some_and(|r| r >= region) {
            return Err(DepsDecodeError::NotCanonical);
        }
        last_region = Some(region);
        let delta = unzigzag(get_varint(buf, &mut at)?);
        match result.binary_search_by_key(&region, |&(r, _)| r) {
            Ok(i) => {
                let seq = result[i].1.wrapping_add(delta as u64);
                if seq == 0 {
                    result.remove(i);
                } else {
                    result[i].1 = seq;
                }
            }
            Err(i) => {
                if delta == 0 {
                    return Err(DepsDecodeError::NotCanonical);
                }
                result.insert(i, (region, delta as u64));
            }
        }
        if result.len() > DEPS_ENTRIES_MAX {
            return Err(DepsDecodeError::OutOfBounds);
        }
    }
    Ok((result, at))
}

/// `(region, before, after)` for every region whose entry differs, sorted by region.
fn changes(previous: &[(u32, u64)], deps: &[(u32, u64)]) -> Vec<(u32, u64, u64)> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    loop {
        match (previous.get(i), deps.get(j)) {
            (None, None) => break,
            (Some(&(r, s)), None) => {
                out.push((r, s, 0));
                i += 1;
            }
            (None, Some(&(r, s))) => {
                out.push((r, 0, s));
                j += 1;
            }
            (Some(&(pr, ps)), Some(&(dr, ds))) => {
                if pr < dr {
                    out.push((pr, ps, 0));
                    i += 1;
                } else if dr < pr {
                    out.push((dr, 0, ds));
                    j += 1;
                } else {
                    if ps != ds {
                        out.push((pr, ps, ds));
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
    }
    out
}

fn bounded_count(count: u64) -> Result<usize, DepsDecodeError> {
    usize::try_from(count)
        .ok()
        .filter(|&c| c <= DEPS_ENTRIES_MAX)
        .ok_or(DepsDecodeError::OutOfBounds)
}

fn region_of(value: u64) -> Result<u32, DepsDecodeError> {
    u32::try_from(value).map_err(|_| DepsDecodeError::OutOfBounds)
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Appends `value` as an unsigned LEB128 varint in its shortest form (the one varint writer of
/// the replication wire, the dependency vectors and the topic catalog).
pub fn put_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads an unsigned LEB128 varint at `*at`, advancing it; refuses truncated encodings and any
/// but the shortest (so every value has exactly one encoding). The one varint reader of the
/// replication wire, the dependency vectors and the topic catalog.
pub fn get_varint(buf: &[u8], at: &mut usize) -> Result<u64, DepsDecodeError> {
    let mut value: u64 = 0;
    for shift in 0..10u32 {
        let byte = *buf.get(*at).ok_or(DepsDecodeError::Truncated)?;
        *at += 1;
        let bits = u64::from(byte & 0x7f);
        if shift == 9 && bits > 1 {
            return Err(DepsDecodeError::Overlong);
        }
        value |= bits << (7 * shift);
        if byte & 0x80 == 0 {
            if shift > 0 && byte == 0 {
                // A trailing zero group: the same value has a shorter encoding.
                return Err(DepsDecodeError::Overlong);
            }
            return Ok(value);
        }
    }
    Err(DepsDecodeError::Overlong)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_the_shortest_varint_encoding_is_read() {
        let read = |bytes: &[u8]| get_varint(bytes, &mut 0);
        assert_eq!(read(&[0x00]), Ok(0));
        assert_eq!(read(&[0x80, 0x01]), Ok(128));
        assert_eq!(read(&[0x80, 0x00]), Err(DepsDecodeError::Overlong));
        assert_eq!(read(&[0xff, 0x80, 0x00]), Err(DepsDecodeError::Overlong));
        assert_eq!(read(&[0x80]), Err(DepsDecodeError::Truncated));
        let mut max = Vec::new();
        put_varint(u64::MAX, &mut max);
        assert_eq!(read(&max), Ok(u64::MAX));
    }

    fn deps_strategy() -> impl Strategy<Value = Vec<(u32, u64)>> {
        proptest::collection::btree_map(any::<u32>(), 1..=u64::MAX, 0..12)
            .prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        #[test]
        fn varint_round_trips(deps in deps_strategy()) {
            let mut buf = Vec::new();
            encode_varint(&deps, &mut buf);
            prop_assert_eq!(decode_varint(&buf), Ok((deps, buf.len())));
        }

        #[test]
        fn delta_round_trips(previous in deps_strategy(), deps in deps_strategy()) {
            let mut buf = Vec::new();
            encode_delta(&previous, &deps, &mut buf);
            prop_assert_eq!(decode_delta(&previous, &buf), Ok((deps, buf.len())));
        }

        #[test]
        fn truncated_input_is_refused_not_misread(deps in deps_strategy(), cut in 0usize..64) {
            let mut buf = Vec::new();
            encode_varint(&deps, &mut buf);
            if cut < buf.len() {
                prop_assert!(decode_varint(&buf[..cut]).is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_varint(&bytes);
            let _ = decode_delta(&[(1, 5), (2, 7)], &bytes);
        }
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        let mut buf = Vec::new();
        put_varint(u64::MAX, &mut buf);
        assert_eq!(decode_varint(&buf), Err(DepsDecodeError::OutOfBounds));
    }

    #[test]
    fn fixed_matches_the_storage_layout() {
        let mut buf = Vec::new();
        encode_fixed(&[(1, 2)], &mut buf);
        assert_eq!(buf, vec![0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2]);
    }
}
