//! Transactions in the on-disk simulation: each region runs one transactional producer, as the
//! broker's coordinator drives it (data batches with sequences, commit and abort markers, an
//! abort with a bumped epoch for what a crash left open), and while a region is down with a
//! transaction open, the others may abort that transaction for it, as the broker does for a
//! stale region (`transactions/abandoned.rs`). The model knows every transaction's outcome;
//! at the end every region must show every transactional batch it retains as the model says:
//! committed, aborted or still open, whatever order its batches and markers arrived in, across
//! crashes (producer state recovered from the snapshot and the log).
//!
//! A takeover abort is only written for a transaction its origin will abort too (it was open
//! when the origin crashed); the one case the broker cannot decide (an origin that committed
//! and then went silent) is outside the model.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use causeway_replication::sim::Payload;
use causeway_storage::{
    control_batch, BatchHeader, ControlType, Partition, PRODUCER_ID_COUNTER_BITS,
};

/// What a simulated write becomes.
pub enum Write {
    /// An ordinary batch with no producer.
    Plain,
    /// A batch of transaction data of `producer_id` at `epoch`, sequences from `first_seq`.
    Transactional {
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
    },
    /// A commit or abort marker.
    Marker {
        kind: ControlType,
        producer_id: i64,
        epoch: i16,
    },
}

/// One region's producer.
#[derive(Default)]
struct Producer {
    epoch: i16,
    next_seq: i32,
    /// The transaction open at the origin, if any.
    open: Option<usize>,
    /// Crashed since its last write: its coordinator first aborts what is open.
    crashed: bool,
    region: Option<u32>,
}

/// How a transaction ended, as its batches must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    Aborted,
    Open,
}

/// Every region's producer, every transaction's outcome, and the partitions (to read what a
/// region has seen of the others' transactions).
#[derive(Default)]
pub struct TransactionModel {
    producers: Vec<Producer>,
    outcomes: Vec<Outcome>,
    /// Data batches written in each transaction.
    sizes: Vec<usize>,
    /// Transaction of each transactional data batch, by write number.
    transaction_of: HashMap<Payload, usize>,
    partitions: Vec<Weak<Partition>>,
    /// Counts for the report: transactions begun, takeover aborts written.
    pub begun: u64,
    pub taken_over: u64,
}

/// The producer id region `region` hands out to its one producer.
pub fn producer_id(region: u32) -> i64 {
    (i64::from(region) << PRODUCER_ID_COUNTER_BITS) | 1
}

impl TransactionModel {
    /// Region `index` now runs over `partition`.
    pub fn opened(&mut self, index: usize, partition: &Arc<Partition>) {
        if self.partitions.len() <= index {
            self.partitions.resize_with(index + 1, Weak::new);
            self.producers.resize_with(index + 1, Producer::default);
        }
        self.partitions[index] = Arc::downgrade(partition);
    }

    /// Region `index` was killed.
    pub fn crashed(&mut self, index: usize) {
        if let Some(producer) = self.producers.get_mut(index) {
            producer.crashed = true;
        }
    }

    /// What write `number` of region `index` (id `region`) is.
    pub fn write(&mut self, index: usize, region: u32, number: Payload) -> Write {
        let producer_id = producer_id(region);
        let seen_epoch = self.epoch_seen(index, producer_id);
        let producer = &mut self.producers[index];
        producer.region = Some(region);
        if seen_epoch > producer.epoch {
            // Another region's abort fenced this producer here.
            producer.epoch = seen_epoch;
            producer.next_seq = 0;
        }
        if std::mem::take(&mut producer.crashed) {
            if let Some(open) = producer.open.take() {
                // The coordinator aborts, at its timeout, what the crash left open.
                producer.epoch += 1;
                producer.next_seq = 0;
                self.outcomes[open] = Outcome::Aborted;
                return marker(ControlType::Abort, producer_id, producer.epoch);
            }
        }
        if number % 8 == 7 {
            if let Some(takeover) = self.take_over(index) {
                return takeover;
            }
        }
        if matches!(number % 8, 4 | 5) && self.producers[index].open.is_none() {
            self.outcomes.push(Outcome::Open);
            self.sizes.push(0);
            self.begun += 1;
            self.producers[index].open = Some(self.outcomes.len() - 1);
        }
        let producer = &mut self.producers[index];
        match (number % 8, producer.open) {
            (4 | 5, Some(transaction)) => {
                self.transaction_of.insert(number, transaction);
                self.sizes[transaction] += 1;
                let first_seq = producer.next_seq;
                producer.next_seq += records_in(number);
                Write::Transactional {
                    producer_id,
                    epoch: producer.epoch,
                    first_seq,
                }
            }
            (6 | 7, Some(open)) => {
                let kind = if number % 8 == 6 {
                    ControlType::Commit
                } else {
                    ControlType::Abort
                };
                producer.open = None;
                self.outcomes[open] = match kind {
                    ControlType::Commit => Outcome::Committed,
                    ControlType::Abort => Outcome::Aborted,
                };
                marker(kind, producer_id, producer.epoch)
            }
            _ => Write::Plain,
        }
    }

    /// An abort, by region `index`, of the transaction a crashed region left open, if this
    /// region's log shows that very transaction open and holds all of its batches (the broker
    /// waits long after the transaction's last write; a batch arriving after the abort would
    /// open it again there until the next abort, which the model does not run).
    fn take_over(&mut self, index: usize) -> Option<Write> {
        let partition = self.partitions.get(index)?.upgrade()?;
        for (origin, producer) in self.producers.iter().enumerate() {
            let (Some(open), Some(region), true) =
                (producer.open, producer.region, producer.crashed)
            else {
                continue;
            };
            if origin == index {
                continue;
            }
            let producer_id = producer_id(region);
            let Some(seen) = partition
                .open_transactions()
                .into_iter()
                .find(|t| t.producer_id == producer_id)
            else {
                continue;
            };
            let Ok(held) = transactional_batches(&partition, seen.first_offset) else {
                continue;
            };
            let of_open = held
                .iter()
                .filter(|b| self.transaction_of.get(&b.number) == Some(&open))
                .count();
            let first = held
                .first()
                .and_then(|b| self.transaction_of.get(&b.number));
            if first != Some(&open) || of_open != self.sizes[open] {
                continue;
            }
            self.outcomes[open] = Outcome::Aborted;
            self.taken_over += 1;
            let epoch = seen.epoch.checked_add(1).unwrap_or(seen.epoch);
            return Some(marker(ControlType::Abort, producer_id, epoch));
        }
        None
    }

    fn epoch_seen(&self, index: usize, producer_id: i64) -> i16 {
        self.partitions
            .get(index)
            .and_then(Weak::upgrade)
            .and_then(|p| p.producer_epoch(producer_id))
            .unwrap_or(0)
    }

    /// The outcome each retained transactional batch of `partition` shows, by write number.
    pub fn shown(&self, partition: &Partition) -> Result<HashMap<Payload, Outcome>, String> {
        let aborted = partition.aborted_transactions(0, i64::MAX);
        let open = partition.open_transactions();
        let mut shown = HashMap::new();
        for batch in transactional_batches(partition, partition.log_start_offset())? {
            let at = batch.offset;
            let outcome = if aborted.iter().any(|a| {
                a.producer_id == batch.producer_id && a.first_offset <= at && at < a.last_offset
            }) {
                Outcome::Aborted
            } else if open
                .iter()
                .any(|t| t.producer_id == batch.producer_id && t.first_offset <= at)
            {
                Outcome::Open
            } else {
                Outcome::Committed
            };
            shown.insert(batch.number, outcome);
        }
        Ok(shown)
    }

    /// Checks that `shown` (one region's) agrees with every transaction's outcome.
    pub fn check(&self, region: usize, shown: &HashMap<Payload, Outcome>) -> Result<(), String> {
        for (number, outcome) in shown {
            let transaction = self
                .transaction_of
                .get(number)
                .ok_or_else(|| format!("write {number} is transactional but in no transaction"))?;
            let expected = self.outcomes[*transaction];
            if *outcome != expected {
                return Err(format!(
                    "region #{region} shows write {number} of transaction {transaction} {outcome:?}, but it was {expected:?}"
                ));
            }
        }
        Ok(())
    }
}

fn marker(kind: ControlType, producer_id: i64, epoch: i16) -> Write {
    Write::Marker {
        kind,
        producer_id,
        epoch,
    }
}

/// Records in the batch of write `number` (see `records_of`).
pub fn records_in(number: Payload) -> i32 {
    1 + (number % 3) as i32
}

/// One transactional data batch of a log.
struct Held {
    offset: i64,
    producer_id: i64,
    number: Payload,
}

/// The transactional data batches of `partition` from `from` to its end.
fn transactional_batches(partition: &Partition, from: i64) -> Result<Vec<Held>, String> {
    let mut held = Vec::new();
    let mut offset = from.max(partition.log_start_offset());
    while offset < partition.log_end_offset() {
        let read = partition.read(offset, 1 << 16).map_err(|e| e.to_string())?;
        let mut rest = &read.records[..];
        if BatchHeader::parse(rest).is_err() {
            return Err(format!("no whole batch at offset {offset}"));
        }
        while let Ok(header) = BatchHeader::parse(rest) {
            let bytes = &rest[..header.total_bytes().min(rest.len())];
            offset = header.last_offset() + 1;
            if header.is_transactional() && !header.is_control() {
                held.push(Held {
                    offset: header.base_offset,
                    producer_id: header.producer_id,
                    number: super::number_of(bytes)?,
                });
            }
            rest = &rest[bytes.len()..];
        }
    }
    Ok(held)
}

/// A marker's bytes: the write number rides in its timestamp (markers carry no value).
pub fn marker_bytes(kind: ControlType, producer_id: i64, epoch: i16, number: Payload) -> Vec<u8> {
    control_batch(kind, producer_id, epoch, 0, number as i64)
}
