use proptest::prelude::*;

use super::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any interleaving of appends and reopens (clean or crash) keeps every appended batch, each
    /// in the epoch it was appended in.
    #[test]
    fn appends_and_reopens_preserve_every_batch(
        steps in proptest::collection::vec((1i32..5, 0usize..400, 0u8..10), 1..40)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Some(open(dir.path(), small_config()));
        let mut expected = Vec::new();
        let mut next = 0i64;
        for (i, (count, payload, action)) in steps.into_iter().enumerate() {
            let part = p.as_ref().unwrap();
            let r = append(part, count, i as i64, payload);
            prop_assert_eq!(r.base_offset, next);
            // Stored in the epoch this opening of the log began.
            let mut batch = stored(count, i as i64, payload, next);
            crate::assign_offsets(&mut batch, next, part.leader_epoch());
            expected.extend_from_slice(&batch);
            next += i64::from(count);
            if action == 0 {
                p.take().unwrap().close().unwrap();
                p = Some(open(dir.path(), small_config()));
            } else if action == 1 {
                drop(p.take());
                p = Some(open(dir.path(), small_config()));
            }
        }
        let part = p.take().unwrap();
        prop_assert_eq!(part.log_end_offset(), next);
        prop_assert_eq!(read_all(&part), expected.clone());
        drop(part);
        let part = open(dir.path(), small_config());
        prop_assert_eq!(read_all(&part), expected);
    }
}
