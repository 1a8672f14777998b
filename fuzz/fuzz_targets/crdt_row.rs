//! Stored table rows and record operations: rows decoded from arbitrary bytes, and operations
//! decoded from arbitrary headers and values and applied to them. Nothing may panic; row merge
//! must be commutative and idempotent.
#![no_main]

use causeway_replication::crdt::{decode_op, MergeMode, Row, Stamp};
use libfuzzer_sys::fuzz_target;

/// The `causeway.op` header values, and one the broker does not know.
const OPS: [&[u8]; 6] = [b"put", b"patch", b"incr", b"add", b"remove", b"unknown"];

fuzz_target!(|data: &[u8]| {
    let (left, right) = data.split_at(data.len() / 2);
    if let (Ok(a), Ok(b)) = (Row::from_bytes(left), Row::from_bytes(right)) {
        let ab = Row::merge(&a, &b);
        assert_eq!(
            ab.to_bytes(),
            Row::merge(&b, &a).to_bytes(),
            "row merge is not commutative"
        );
        assert_eq!(
            Row::merge(&ab, &b).to_bytes(),
            ab.to_bytes(),
            "row merge is not idempotent"
        );
        let _ = ab.materialize();
    }
    // Operations from a record: the first byte picks the op and the path length, the rest is
    // the path and the value.
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let op = OPS[usize::from(pick) % OPS.len()];
    let path_len = usize::from(pick >> 4).min(rest.len());
    let (path, value) = rest.split_at(path_len);
    let path = (!path.is_empty()).then_some(path);
    let mut row = Row::new();
    for (index, mode) in [MergeMode::Crdt, MergeMode::Lww].into_iter().enumerate() {
        if let Ok(op) = decode_op(Some(op), path, Some(value), mode) {
            let stamp = Stamp {
                hlc: u64::from(pick),
                origin_region: 1,
                // 0 and not 0: the row encoding writes the partition only when it is not 0.
                partition: u32::from(pick & 1),
                origin_seq: index as u64 + 1,
                index_in_batch: 0,
            };
            row.apply(&op, stamp, &[(1, index as u64 + 1)]);
            let _ = row.materialize();
        }
    }
    let _ = Row::from_bytes(&row.to_bytes()).map(|decoded| {
        assert_eq!(decoded.to_bytes(), row.to_bytes(), "row codec round trip");
    });
});
