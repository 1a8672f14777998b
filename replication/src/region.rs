//! Region identity. Every region must agree on every region's numeric id, because ids are
//! stamped into each batch's causal metadata and into producer ids, so the id is derived from
//! the region's name alone (FNV-1a, folded to [`REGION_ID_BITS`] bits, never 0) rather than
//! handed out by one region. A deployment names its regions; the broker refuses to start if two
//! configured names map to the same id.

/// Bits of a region id: producer ids carry the region id above a 40-bit counter and must stay
/// positive as `i64`.
pub const REGION_ID_BITS: u32 = 22;

/// The id every region derives for the region called `name`.
pub fn region_id(name: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let folded = (hash >> REGION_ID_BITS) ^ (hash & ((1 << REGION_ID_BITS) - 1));
    let id = folded & ((1 << REGION_ID_BITS) - 1);
    if id == 0 {
        1
    } else {
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_nonzero_and_in_range() {
        for name in ["local", "eu", "us", "ap", "region-1", ""] {
            let id = region_id(name);
            assert!(id > 0 && id < 1 << REGION_ID_BITS, "{name}: {id}");
            assert_eq!(id, region_id(name));
        }
        assert_ne!(region_id("eu"), region_id("us"));
        assert_ne!(region_id("a"), region_id("b"));
    }
}
