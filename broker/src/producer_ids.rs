//! Producer ids for idempotent producers. Ids must never repeat, across restarts and across
//! regions (a batch's producer id travels with it when regions replicate), so each id carries
//! this region's id in its high bits and a counter reserved in blocks from the catalog below.

use std::sync::Mutex;

use causeway_storage::{Catalog, StorageError, PRODUCER_ID_COUNTER_BITS as COUNTER_BITS};

// The region id sits above the counter's bits (2^40 ids per region; region ids below 2^23 keep
// every id positive); storage reads it back with `producer_region`.

/// Counters reserved per catalog write.
pub const BLOCK: u64 = 1_000;

/// Hands out producer ids.
pub struct ProducerIds {
    region_id: u32,
    /// Next counter to hand out and the end of the reserved block.
    reserved: Mutex<(u64, u64)>,
}

impl ProducerIds {
    /// Ids for region `region_id`; nothing is reserved until the first request.
    pub fn new(region_id: u32) -> ProducerIds {
        ProducerIds {
            region_id,
            reserved: Mutex::new((0, 0)),
        }
    }

    /// A producer id never handed out before by any region.
    pub fn next(&self, catalog: &Catalog) -> Result<i64, StorageError> {
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        if reserved.0 == reserved.1 {
            let first = catalog.reserve_producer_ids(BLOCK)?;
            *reserved = (first, first + BLOCK);
        }
        let counter = reserved.0;
        reserved.0 += 1;
        compose(self.region_id, counter)
            .ok_or_else(|| StorageError::Db("producer id space of this region exhausted".into()))
    }
}

impl ProducerIds {
    /// Whether this region handed out `id` (in this run or an earlier one): a produce with an id
    /// that was never issued could fence or shadow another producer's sequence state.
    pub fn was_issued(&self, id: i64, catalog: &Catalog) -> Result<bool, StorageError> {
        let Ok(id) = u64::try_from(id) else {
            return Ok(false);
        };
        if id >> COUNTER_BITS != u64::from(self.region_id) {
            return Ok(false);
        }
        let counter = id & ((1 << COUNTER_BITS) - 1);
        let next = self.reserved.lock().unwrap_or_else(|e| e.into_inner()).0;
        if next > 0 {
            // This run has handed out ids: every one below the next is issued (this run's
            // blocks start above every earlier run's). An id reserved but not handed out yet
            // is not: a client writing under it first would make the real producer's first
            // batch look like its retry.
            return Ok(counter < next);
        }
        // After a restart nothing is reserved in memory until the next InitProducerId: what
        // earlier runs handed out is below the catalog's counter.
        Ok(counter < catalog.producer_ids_reserved()?)
    }
}

/// The counter of producer id `id` if region `region_id` handed it out (`None` for another
/// region's id or a negative one): the metadata rebuild finds the highest counter in the logs.
pub fn counter_of(region_id: u32, id: i64) -> Option<u64> {
    let id = u64::try_from(id).ok()?;
    (id >> COUNTER_BITS == u64::from(region_id)).then_some(id & ((1 << COUNTER_BITS) - 1))
}

/// The id for `counter` in `region_id`, if it fits.
fn compose(region_id: u32, counter: u64) -> Option<i64> {
    if counter >= 1 << COUNTER_BITS || region_id >= 1 << (63 - COUNTER_BITS) {
        return None;
    }
    i64::try_from((u64::from(region_id) << COUNTER_BITS) | counter).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_different_regions_never_collide() {
        assert_ne!(compose(1, 5), compose(2, 5));
        assert_eq!(compose(1, 0), Some(1 << COUNTER_BITS));
    }

    #[test]
    fn counters_come_back_only_for_this_regions_ids() {
        let id = compose(3, 1_234).expect("id");
        assert_eq!(counter_of(3, id), Some(1_234));
        assert_eq!(counter_of(4, id), None);
        assert_eq!(counter_of(3, -1), None);
    }

    #[test]
    fn an_id_names_the_region_that_handed_it_out() {
        let id = compose(77, 12).expect("fits");
        assert_eq!(causeway_storage::producer_region(id), Some(77));
        assert_eq!(causeway_storage::producer_region(-1), None);
    }

    #[test]
    fn ids_outside_the_space_are_refused() {
        assert_eq!(compose(1, 1 << COUNTER_BITS), None);
        assert_eq!(compose(1 << 23, 0), None);
    }

    #[test]
    fn only_ids_this_region_handed_out_were_issued() {
        let dir = tempfile::tempdir().expect("tempdir");
        let issued = {
            let catalog = Catalog::open(dir.path()).expect("open");
            let ids = ProducerIds::new(3);
            let issued = ids.next(&catalog).expect("id");
            assert!(ids.was_issued(issued, &catalog).expect("check"));
            assert!(
                !ids.was_issued(issued + 1, &catalog).expect("check"),
                "reserved in this run's block but not handed out yet"
            );
            assert!(!ids.was_issued(issued + 5_000, &catalog).expect("check"));
            assert!(!ids
                .was_issued(compose(4, 0).expect("id"), &catalog)
                .expect("check"));
            assert!(!ids.was_issued(-1, &catalog).expect("check"));
            issued
        };
        let catalog = Catalog::open(dir.path()).expect("reopen");
        assert!(ProducerIds::new(3)
            .was_issued(issued, &catalog)
            .expect("check"));
    }

    #[test]
    fn ids_are_unique_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = {
            let catalog = Catalog::open(dir.path()).expect("open");
            ProducerIds::new(1).next(&catalog).expect("id")
        };
        let catalog = Catalog::open(dir.path()).expect("reopen");
        let ids = ProducerIds::new(1);
        let second = ids.next(&catalog).expect("id");
        let third = ids.next(&catalog).expect("id");
        assert!(second > first);
        assert_eq!(third, second + 1);
    }
}
