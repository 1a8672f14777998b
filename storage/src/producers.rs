//! Idempotent-producer state of one partition: for each producer id, its epoch and its last
//! five batches' sequence ranges and offsets. It decides whether a batch is new (append), a
//! retry of one already appended (answer with the original offsets, append nothing), out of
//! order, or from a fenced epoch. Pure: no I/O; the partition feeds it batch headers and
//! persists its snapshot.
//!
//! ## Rules (Kafka's)
//! - `producerId < 0`: not idempotent, always appended.
//! - An epoch older than the producer's current one: `InvalidEpoch`.
//! - A newer epoch starts over: its first batch must have sequence 0.
//! - Same epoch: a batch whose sequence range equals one of the last five is a duplicate;
//!   otherwise its first sequence must follow the last appended one (wrapping after
//!   `i32::MAX` to 0), else `OutOfOrder`.
//! - An unknown producer is accepted at any sequence (its state may have expired), as Kafka does
//!   since KIP-360.
//!
//! - Control batches (transaction markers) carry no sequences: only their epoch is checked.
//!
//! ## Transactions
//! A transactional data batch opens its producer's transaction at its base offset unless one is
//! open; a control batch closes it. The last stable offset (LSO) is the first offset of the
//! oldest open transaction (or the log end). Aborted transactions are remembered as
//! `(producer id, first offset, marker offset)` so read_committed fetches can list those that
//! overlap what they return.
//!
//! ## Snapshot format (`producers.snapshot`, version 1)
//! JSON `{"version":1,"end_offset":N,"producers":[{"producer_id":..,"epoch":..,
//! "last_write_ms":..,"batches":[{"first_seq":..,"last_seq":..,"base_offset":..,
//! "last_offset":..}]}]}`: the state after every batch below `end_offset`. Written atomically at
//! segment roll and clean shutdown; on open the batches from `end_offset` to the log end are
//! replayed from their headers, so a crash loses nothing.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::batch::BatchHeader;
use crate::causal::CausalMeta;
use crate::control::ControlType;

/// Bits of a producer id below the id of the region that issued it: producer ids never repeat
/// across regions, and the issuing region is the only one whose coordinator ends the id's
/// transactions.
pub const PRODUCER_ID_COUNTER_BITS: u32 = 40;

/// The region that issued producer id `id` (`None` for a negative id).
pub fn producer_region(id: i64) -> Option<u32> {
    let id = u64::try_from(id).ok()?;
    u32::try_from(id >> PRODUCER_ID_COUNTER_BITS).ok()
}

/// How many recent batches per producer are remembered for deduplication (Kafka's
/// `max.in.flight.requests.per.connection` limit for idempotence).
pub const BATCHES_REMEMBERED: usize = 5;

/// Version of the snapshot format.
const SNAPSHOT_VERSION: u32 = 1;

/// One remembered batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct RememberedBatch {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
    last_offset: i64,
}

/// What is known of one producer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ProducerEntry {
    producer_id: i64,
    epoch: i16,
    last_write_ms: i64,
    batches: VecDeque<RememberedBatch>,
}

/// Whether a batch should be appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New data: append it.
    Append,
    /// A retry of a batch already in the log at these offsets: append nothing.
    Duplicate {
        /// Offset of its first record.
        base_offset: i64,
        /// Offset of its last record.
        last_offset: i64,
    },
}

/// Why an idempotent batch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// The batch does not follow the producer's last one.
    #[error("producer {producer_id}: expected sequence {expected}, got {got}")]
    OutOfOrder {
        /// The producer.
        producer_id: i64,
        /// The next sequence we expected.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
    /// The producer was superseded by a newer epoch.
    #[error("producer {producer_id}: epoch {got} is older than the current {current}")]
    InvalidEpoch {
        /// The producer.
        producer_id: i64,
        /// The current epoch.
        current: i16,
        /// The batch's epoch.
        got: i16,
    },
}

/// A transaction that was aborted: read_committed consumers skip its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedTransaction {
    /// The transactional producer.
    pub producer_id: i64,
    /// Offset of its first record in this partition.
    pub first_offset: i64,
    /// Offset of its abort marker.
    pub last_offset: i64,
}

/// A transaction with data in the partition and no commit or abort marker after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenTransaction {
    /// The transactional producer.
    pub producer_id: i64,
    /// Its epoch as last seen in this partition.
    pub epoch: i16,
    /// Offset of the transaction's first batch here.
    pub first_offset: i64,
    /// When this partition last took a batch of the producer (local time of the append): how
    /// long a transaction whose origin went silent has been left open.
    pub last_write_ms: i64,
}

/// A producer whose state a partition keeps, as DescribeProducers reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    /// The producer id.
    pub producer_id: i64,
    /// Its epoch as last seen in this partition.
    pub epoch: i16,
    /// Sequence of its last record here, -1 when no batch is remembered (after an epoch bump
    /// by a marker).
    pub last_sequence: i32,
    /// When this partition last took a batch of it (local time of the append).
    pub last_write_ms: i64,
    /// Offset of its open transaction's first batch here, if one is open.
    pub transaction_start_offset: Option<i64>,
}

/// All producers' state for one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    entries: HashMap<i64, ProducerEntry>,
    /// Open transactions: producer id -> first offset.
    ongoing: BTreeMap<i64, i64>,
    /// Open transactions: producer id -> the origin sequence of its first batch here, when
    /// known (what decides whether another region's abort ends it: `end_transaction`).
    ongoing_first_seq: BTreeMap<i64, u64>,
    /// Aborted transactions, in marker order.
    aborted: Vec<AbortedTransaction>,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    end_offset: i64,
    producers: Vec<ProducerEntry>,
    #[serde(default)]
    ongoing: BTreeMap<i64, i64>,
    #[serde(default)]
    ongoing_first_seq: BTreeMap<i64, u64>,
    #[serde(default)]
    aborted: Vec<AbortedTransaction>,
}

/// The sequence after `seq`, wrapping as Kafka does.
fn next_sequence(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// The sequence of a batch's last record.
fn last_sequence(header: &BatchHeader) -> i32 {
    let last = i64::from(header.base_sequence) + i64::from(header.last_offset_delta);
    if last > i64::from(i32::MAX) {
        (last - i64::from(i32::MAX) - 1) as i32
    } else {
        last as i32
    }
}

impl ProducerStates {
    /// Decides what to do with a batch (whose offsets are not assigned yet).
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        if header.producer_id < 0 {
            return Ok(SequenceCheck::Append);
        }
        let Some(entry) = self.entries.get(&header.producer_id) else {
            return Ok(SequenceCheck::Append);
        };
        let producer_id = header.producer_id;
        if header.producer_epoch < entry.epoch {
            return Err(SequenceError::InvalidEpoch {
                producer_id,
                current: entry.epoch,
                got: header.producer_epoch,
            });
        }
        if header.is_control() {
            return Ok(SequenceCheck::Append);
        }
        if header.producer_epoch > entry.epoch {
            return if header.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    producer_id,
                    expected: 0,
                    got: header.base_sequence,
                })
            };
        }
        let last_seq = last_sequence(header);
        if let Some(batch) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == header.base_sequence && b.last_seq == last_seq)
        {
            return Ok(SequenceCheck::Duplicate {
                base_offset: batch.base_offset,
                last_offset: batch.last_offset,
            });
        }
        let expected = entry
            .batches
            .back()
            .map_or(header.base_sequence, |b| next_sequence(b.last_seq));
        if header.base_sequence == expected {
            Ok(SequenceCheck::Append)
        } else {
            Err(SequenceError::OutOfOrder {
                producer_id,
                expected,
                got: header.base_sequence,
            })
        }
    }

    /// Records an appended batch (offsets assigned); `control` is its marker type if it is a
    /// control batch; `meta` its causal stamp, where known. A producer new to the partition when
    /// `producers_max` are known first makes room ([`ProducerStates::evict_idlest`]).
    pub fn record(
        &mut self,
        header: &BatchHeader,
        control: Option<ControlType>,
        meta: Option<&CausalMeta>,
        now_ms: i64,
        producers_max: usize,
    ) {
        if header.producer_id < 0 {
            return;
        }
        if let Some(kind) = control {
            self.end_transaction(header, kind, meta, now_ms);
            return;
        }
        if header.is_transactional() && !self.ongoing.contains_key(&header.producer_id) {
            self.ongoing.insert(header.producer_id, header.base_offset);
            if let Some(meta) = meta {
                self.ongoing_first_seq
                    .insert(header.producer_id, meta.origin_seq);
            }
        }
        if self.entries.len() >= producers_max && !self.entries.contains_key(&header.producer_id) {
            self.evict_idlest();
        }
        let entry = self
            .entries
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry {
                producer_id: header.producer_id,
                epoch: header.producer_epoch,
                last_write_ms: now_ms,
                batches: VecDeque::new(),
            });
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.last_write_ms = now_ms;
        if entry.batches.len() == BATCHES_REMEMBERED {
            entry.batches.pop_front();
        }
        entry.batches.push_back(RememberedBatch {
            first_seq: header.base_sequence,
            last_seq: last_sequence(header),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
    }

    fn end_transaction(
        &mut self,
        marker: &BatchHeader,
        kind: ControlType,
        meta: Option<&CausalMeta>,
        now_ms: i64,
    ) {
        if !self.ends_open_transaction(marker, meta) {
            return;
        }
        let entry = self
            .entries
            .entry(marker.producer_id)
            .or_insert_with(|| ProducerEntry {
                producer_id: marker.producer_id,
                epoch: marker.producer_epoch,
                last_write_ms: now_ms,
                batches: VecDeque::new(),
            });
        if marker.producer_epoch > entry.epoch {
            entry.epoch = marker.producer_epoch;
            entry.batches.clear();
        }
        entry.last_write_ms = now_ms;
        self.ongoing_first_seq.remove(&marker.producer_id);
        if let Some(first_offset) = self.ongoing.remove(&marker.producer_id) {
            if kind == ControlType::Abort {
                self.aborted.push(AbortedTransaction {
                    producer_id: marker.producer_id,
                    first_offset,
                    last_offset: marker.base_offset,
                });
            }
        }
    }

    /// Whether a marker applies. The producer's own region (its coordinator) ends whatever is
    /// open. Another region writes only aborts, of transactions its stale origin left open, and
    /// such an abort ends the open transaction only if the writer had seen its first batch (the
    /// marker's dependencies cover it): in a region where the origin had meanwhile finished that
    /// transaction and begun another, the marker must not end the new one, so that every region
    /// applies it to the same transaction whatever order the batches arrived in.
    fn ends_open_transaction(&self, marker: &BatchHeader, meta: Option<&CausalMeta>) -> bool {
        let Some(meta) = meta else { return true };
        let Some(origin) = producer_region(marker.producer_id) else {
            return true;
        };
        if meta.origin_region == origin {
            return true;
        }
        let seen = meta
            .deps
            .iter()
            .find(|(region, _)| *region == origin)
            .map_or(0, |(_, seq)| *seq);
        self.ongoing.contains_key(&marker.producer_id)
            && self
                .ongoing_first_seq
                .get(&marker.producer_id)
                .is_none_or(|first| *first <= seen)
    }

    /// First offset of the oldest open transaction, if any: the last stable offset.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.values().min().copied()
    }

    /// Aborted transactions whose records may lie in `[from, to)`.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTransaction> {
        self.aborted
            .iter()
            .filter(|a| a.last_offset >= from && a.first_offset < to)
            .copied()
            .collect()
    }

    /// Forgets aborted transactions whose marker lies below `log_start`.
    pub fn forget_aborted_below(&mut self, log_start: i64) {
        self.aborted.retain(|a| a.last_offset >= log_start);
    }

    /// Forgets the producer that wrote least recently among those with no open transaction (a
    /// transaction's producer must stay known until its marker). Its next batch is then taken as
    /// a new producer's, without a duplicate check, as after idle expiry. Returns whether one was
    /// forgotten: with a transaction open for every producer, none is.
    fn evict_idlest(&mut self) -> bool {
        let idlest = self
            .entries
            .values()
            .filter(|e| !self.ongoing.contains_key(&e.producer_id))
            .min_by_key(|e| e.last_write_ms)
            .map(|e| e.producer_id);
        let evicted = idlest.is_some_and(|id| self.entries.remove(&id).is_some());
        if evicted {
            metrics::counter!("causeway_storage_producers_evicted_total").increment(1);
        }
        evicted
    }

    /// Forgets producers idle for `idle_ms_max` or longer; returns how many.
    pub fn expire(&mut self, now_ms: i64, idle_ms_max: i64) -> usize {
        let before = self.entries.len();
        let ongoing = &self.ongoing;
        self.entries.retain(|id, e| {
            ongoing.contains_key(id) || now_ms.saturating_sub(e.last_write_ms) < idle_ms_max
        });
        before - self.entries.len()
    }

    /// Every producer known and its current epoch, in no particular order (the metadata
    /// rebuild reads them to hand out producer ids above every one already used).
    pub fn producer_epochs(&self) -> impl Iterator<Item = (i64, i16)> + '_ {
        self.entries.iter().map(|(&id, entry)| (id, entry.epoch))
    }

    /// The open transactions, by producer id: the metadata rebuild finds them when their
    /// coordinator records are gone, and other regions abort those of a region gone silent.
    pub fn open_transactions(&self) -> impl Iterator<Item = OpenTransaction> + '_ {
        self.ongoing.iter().map(|(&producer_id, &first_offset)| {
            let entry = self.entries.get(&producer_id);
            OpenTransaction {
                producer_id,
                epoch: entry.map_or(0, |e| e.epoch),
                first_offset,
                last_write_ms: entry.map_or(i64::MIN, |e| e.last_write_ms),
            }
        })
    }

    /// Every producer whose state is kept, by producer id: an operator finds the producers
    /// holding a partition's transactions open (DescribeProducers, as `kafka-transactions.sh
    /// describe-producers` asks).
    pub fn active_producers(&self) -> Vec<ActiveProducer> {
        let mut producers: Vec<ActiveProducer> = self
            .entries
            .values()
            .map(|entry| ActiveProducer {
                producer_id: entry.producer_id,
                epoch: entry.epoch,
                last_sequence: entry.batches.back().map_or(-1, |b| b.last_seq),
                last_write_ms: entry.last_write_ms,
                transaction_start_offset: self.ongoing.get(&entry.producer_id).copied(),
            })
            .collect();
        producers.sort_by_key(|p| p.producer_id);
        producers
    }

    /// The epoch of `producer_id` as last seen here, if it is known.
    pub fn epoch_of(&self, producer_id: i64) -> Option<i16> {
        self.entries.get(&producer_id).map(|e| e.epoch)
    }

    /// Number of producers known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no producer is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The snapshot bytes of this state, valid for the log below `end_offset`.
    pub fn encode_snapshot(&self, end_offset: i64) -> Vec<u8> {
        let mut producers: Vec<ProducerEntry> = self.entries.values().cloned().collect();
        producers.sort_by_key(|p| p.producer_id);
        let snapshot = Snapshot {
            version: SNAPSHOT_VERSION,
            end_offset,
            producers,
            ongoing: self.ongoing.clone(),
            ongoing_first_seq: self.ongoing_first_seq.clone(),
            aborted: self.aborted.clone(),
        };
        serde_json::to_vec(&snapshot).unwrap_or_default()
    }

    /// Parses a snapshot; `None` if it is torn, from another version, or malformed (the caller
    /// then rebuilds from the log).
    pub fn decode_snapshot(bytes: &[u8]) -> Option<(i64, ProducerStates)> {
        let snapshot: Snapshot = serde_json::from_slice(bytes).ok()?;
        if snapshot.version != SNAPSHOT_VERSION {
            return None;
        }
        let entries = snapshot
            .producers
            .into_iter()
            .map(|p| (p.producer_id, p))
            .collect();
        Some((
            snapshot.end_offset,
            ProducerStates {
                entries,
                ongoing: snapshot.ongoing,
                ongoing_first_seq: snapshot.ongoing_first_seq,
                aborted: snapshot.aborted,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        records: i32,
        base_offset: i64,
    ) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence: first_seq,
            records_count: records,
        }
    }

    fn append(states: &mut ProducerStates, h: BatchHeader) -> Result<SequenceCheck, SequenceError> {
        let check = states.check(&h)?;
        if check == SequenceCheck::Append {
            states.record(&h, None, None, 0, usize::MAX);
        }
        Ok(check)
    }

    #[test]
    fn in_order_batches_are_appended() {
        let mut s = ProducerStates::default();
        assert_eq!(
            append(&mut s, header(7, 0, 0, 3, 0)),
            Ok(SequenceCheck::Append)
        );
        assert_eq!(
            append(&mut s, header(7, 0, 3, 2, 3)),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn a_retried_batch_gets_its_original_offsets_back() {
        let mut s = ProducerStates::default();
        append(&mut s, header(7, 0, 0, 3, 10)).expect("first");
        append(&mut s, header(7, 0, 3, 3, 13)).expect("second");
        assert_eq!(
            s.check(&header(7, 0, 0, 3, -1)),
            Ok(SequenceCheck::Duplicate {
                base_offset: 10,
                last_offset: 12
            })
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerStates::default();
        for i in 0..6 {
            append(&mut s, header(7, 0, i, 1, i64::from(i))).expect("append");
        }
        assert!(matches!(
            s.check(&header(7, 0, 0, 1, -1)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        assert!(matches!(
            s.check(&header(7, 0, 1, 1, -1)),
            Ok(SequenceCheck::Duplicate { base_offset: 1, .. })
        ));
    }

    #[test]
    fn a_gap_is_out_of_order() {
        let mut s = ProducerStates::default();
        append(&mut s, header(7, 0, 0, 1, 0)).expect("append");
        assert_eq!(
            s.check(&header(7, 0, 2, 1, -1)),
            Err(SequenceError::OutOfOrder {
                producer_id: 7,
                expected: 1,
                got: 2
            })
        );
    }

    #[test]
    fn an_older_epoch_is_fenced_and_a_newer_one_restarts_at_zero() {
        let mut s = ProducerStates::default();
        append(&mut s, header(7, 1, 0, 1, 0)).expect("append");
        assert!(matches!(
            s.check(&header(7, 0, 1, 1, -1)),
            Err(SequenceError::InvalidEpoch {
                current: 1,
                got: 0,
                ..
            })
        ));
        assert!(matches!(
            s.check(&header(7, 2, 5, 1, -1)),
            Err(SequenceError::OutOfOrder { expected: 0, .. })
        ));
        assert_eq!(
            append(&mut s, header(7, 2, 0, 1, 1)),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        let mut s = ProducerStates::default();
        append(&mut s, header(7, 0, i32::MAX - 1, 2, 0)).expect("append");
        assert_eq!(s.check(&header(7, 0, 0, 1, -1)), Ok(SequenceCheck::Append));
    }

    #[test]
    fn producers_never_affect_each_other() {
        let mut s = ProducerStates::default();
        append(&mut s, header(7, 0, 0, 1, 0)).expect("append");
        assert!(s.check(&header(7, 0, 9, 1, -1)).is_err());
        assert_eq!(
            append(&mut s, header(8, 0, 0, 1, 1)),
            Ok(SequenceCheck::Append)
        );
        assert_eq!(
            append(&mut s, header(7, 0, 1, 1, 2)),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn snapshot_round_trips_and_rejects_garbage() {
        let mut s = ProducerStates::default();
        append(&mut s, header(7, 3, 0, 4, 0)).expect("append");
        append(&mut s, header(9, 0, 0, 1, 4)).expect("append");
        let bytes = s.encode_snapshot(5);
        assert_eq!(ProducerStates::decode_snapshot(&bytes), Some((5, s)));
        assert_eq!(
            ProducerStates::decode_snapshot(&bytes[..bytes.len() / 2]),
            None
        );
    }

    fn transactional(mut h: BatchHeader) -> BatchHeader {
        h.attributes |= 0x10;
        h
    }

    fn marker(producer_id: i64, epoch: i16, offset: i64) -> BatchHeader {
        let mut h = header(producer_id, epoch, -1, 1, offset);
        h.attributes = 0x30;
        h
    }

    /// A batch of region `origin`'s `seq`-th write, having seen `east_seen` of region 5.
    fn stamp(origin: u32, seq: u64, east_seen: u64) -> CausalMeta {
        CausalMeta {
            origin_region: origin,
            origin_seq: seq,
            hlc: 0,
            deps: vec![(5, east_seen)],
        }
    }

    #[test]
    fn another_regions_abort_ends_only_the_transaction_its_writer_saw_open() {
        const EAST: u32 = 5;
        const WEST: u32 = 9;
        let producer = (i64::from(EAST) << PRODUCER_ID_COUNTER_BITS) | 1;
        assert_eq!(producer_region(producer), Some(EAST));
        // West saw the transaction's first batch (east's 3rd) and no marker: it aborts it.
        let takeover = stamp(WEST, 1, 3);
        let mut west = ProducerStates::default();
        let first = stamp(EAST, 3, 2);
        west.record(
            &transactional(header(producer, 0, 0, 2, 10)),
            None,
            Some(&first),
            0,
            usize::MAX,
        );
        west.record(
            &marker(producer, 1, 11),
            Some(ControlType::Abort),
            Some(&takeover),
            0,
            usize::MAX,
        );
        assert_eq!(west.first_unstable_offset(), None);
        assert_eq!(west.aborted_between(0, 100).len(), 1);
        assert_eq!(
            west.epoch_of(producer),
            Some(1),
            "the origin's producer is fenced"
        );
        // East had committed that transaction and begun another (its 5th batch) when the abort
        // came: the abort must leave the new one open, as it never reached west.
        let mut east = ProducerStates::default();
        east.record(
            &transactional(header(producer, 0, 0, 2, 10)),
            None,
            Some(&first),
            0,
            usize::MAX,
        );
        east.record(
            &marker(producer, 0, 11),
            Some(ControlType::Commit),
            Some(&stamp(EAST, 4, 3)),
            0,
            usize::MAX,
        );
        east.record(
            &transactional(header(producer, 0, 2, 1, 12)),
            None,
            Some(&stamp(EAST, 5, 4)),
            0,
            usize::MAX,
        );
        east.record(
            &marker(producer, 1, 13),
            Some(ControlType::Abort),
            Some(&takeover),
            0,
            usize::MAX,
        );
        assert_eq!(east.first_unstable_offset(), Some(12));
        assert!(east.aborted_between(0, 100).is_empty());
        assert_eq!(east.epoch_of(producer), Some(0));
        // The origin's own markers end whatever is open.
        east.record(
            &marker(producer, 0, 14),
            Some(ControlType::Commit),
            Some(&stamp(EAST, 6, 5)),
            0,
            usize::MAX,
        );
        assert_eq!(east.first_unstable_offset(), None);
    }

    #[test]
    fn open_transactions_hold_back_the_stable_offset_until_their_marker() {
        let mut s = ProducerStates::default();
        s.record(
            &transactional(header(7, 0, 0, 2, 10)),
            None,
            None,
            0,
            usize::MAX,
        );
        s.record(
            &transactional(header(8, 0, 0, 1, 12)),
            None,
            None,
            0,
            usize::MAX,
        );
        s.record(
            &transactional(header(7, 0, 2, 1, 13)),
            None,
            None,
            0,
            usize::MAX,
        );
        assert_eq!(s.first_unstable_offset(), Some(10));
        s.record(
            &marker(7, 0, 14),
            Some(ControlType::Commit),
            None,
            0,
            usize::MAX,
        );
        assert_eq!(s.first_unstable_offset(), Some(12));
        s.record(
            &marker(8, 0, 15),
            Some(ControlType::Abort),
            None,
            0,
            usize::MAX,
        );
        assert_eq!(s.first_unstable_offset(), None);
        assert_eq!(
            s.aborted_between(0, 100),
            vec![AbortedTransaction {
                producer_id: 8,
                first_offset: 12,
                last_offset: 15
            }]
        );
        assert!(s.aborted_between(16, 100).is_empty());
        let bytes = s.encode_snapshot(16);
        assert_eq!(ProducerStates::decode_snapshot(&bytes), Some((16, s)));
    }

    #[test]
    fn markers_skip_sequence_checks_but_not_fencing() {
        let mut s = ProducerStates::default();
        append(&mut s, transactional(header(7, 2, 0, 1, 0))).expect("append");
        assert_eq!(s.check(&marker(7, 2, 1)), Ok(SequenceCheck::Append));
        assert!(s.check(&marker(7, 1, 1)).is_err());
    }

    #[test]
    fn past_producers_max_the_idlest_producer_without_a_transaction_is_forgotten() {
        let mut s = ProducerStates::default();
        let max = 3;
        s.record(&header(1, 0, 0, 1, 0), None, None, 10, max);
        s.record(&transactional(header(2, 0, 0, 1, 1)), None, None, 5, max);
        s.record(&header(3, 0, 0, 1, 2), None, None, 30, max);
        s.record(&header(1, 0, 1, 1, 3), None, None, 35, max);
        assert_eq!(s.len(), 3, "a known producer takes no room");
        s.record(&header(4, 0, 0, 1, 4), None, None, 40, max);
        assert_eq!(s.len(), 3);
        assert_eq!(s.epoch_of(3), None, "3 wrote least recently");
        assert_eq!(
            s.epoch_of(2),
            Some(0),
            "2 has a transaction open, however idle"
        );
        s.record(&header(5, 0, 0, 1, 5), None, None, 50, max);
        assert_eq!(s.epoch_of(1), None);
        assert_eq!(
            s.check(&header(1, 0, 7, 1, 6)),
            Ok(SequenceCheck::Append),
            "a forgotten producer writes on as a new one"
        );
        let mut all_open = ProducerStates::default();
        for id in 0..4 {
            all_open.record(&transactional(header(id, 0, 0, 1, id)), None, None, id, max);
        }
        assert_eq!(
            all_open.len(),
            4,
            "no producer with an open transaction is forgotten"
        );
    }

    #[test]
    fn idle_producers_expire() {
        let mut s = ProducerStates::default();
        let h = header(7, 0, 0, 1, 0);
        s.record(&h, None, None, 1_000, usize::MAX);
        assert_eq!(s.expire(2_000, 5_000), 0);
        assert_eq!(s.expire(10_000, 5_000), 1);
        assert!(s.is_empty());
    }
}
