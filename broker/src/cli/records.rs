//! `causeway produce` and `causeway consume`: quick checks from a shell over the Kafka protocol,
//! as `rpk topic produce|consume` or kcat, without installing a client.

use std::io::{BufRead, Write};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use causeway_protocol::plain_batch::encode_plain_batch;
use causeway_storage::whole_batches;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{BrokerId, FetchRequest, ProduceRequest, TopicName};
use kafka_protocol::ResponseError;
use serde_json::json;

use super::admin::AdminConnection;
use super::topic::{latest_offsets, offsets, text, EARLIEST};
use super::Target;
use crate::handlers::records::decode_batch;
use crate::wall_clock::now_ms;

/// Most records in one Produce request.
const BATCH_RECORDS_MAX: usize = 500;
/// Most value and key bytes in one Produce request (below the default `max.message.bytes`).
const BATCH_BYTES_MAX: usize = 512 * 1024;
/// Fetch version asked for: the last one that names topics rather than topic ids.
const FETCH_BY_NAME_MAX: i16 = 12;
/// Bytes asked for in one Fetch.
const FETCH_BYTES: i32 = 1 << 20;

/// `causeway produce TOPIC`: one record per line of standard input, acknowledged by the broker
/// (acks=all) before the command exits.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Which broker.
    #[command(flatten)]
    pub target: Target,
    /// Topic to write to.
    pub topic: String,
    /// Partition to write to.
    #[arg(long, short = 'p', default_value_t = 0)]
    pub partition: i32,
    /// Split each line at the first occurrence of this separator into key and value.
    #[arg(long, short = 'K')]
    pub key_separator: Option<String>,
}

/// `causeway consume TOPIC`: prints one partition's records, one value per line.
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// Which broker.
    #[command(flatten)]
    pub target: Target,
    /// Topic to read.
    pub topic: String,
    /// Partition to read.
    #[arg(long, short = 'p', default_value_t = 0)]
    pub partition: i32,
    /// First offset to read [default: the partition's log start].
    #[arg(long, short = 'o')]
    pub offset: Option<i64>,
    /// Stop after this many records, waiting for them if need be [default: stop at the log end
    /// as it was when the command started].
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// One JSON object per record (offset, timestamp, key, value) instead of bare values.
    #[arg(long)]
    pub json: bool,
}

/// Runs `causeway produce`.
pub fn produce(args: &ProduceArgs) -> anyhow::Result<()> {
    let mut broker = AdminConnection::connect(&args.target)?;
    let mut batch: Vec<(Option<Bytes>, Bytes)> = Vec::new();
    let mut batch_bytes = 0;
    let mut span = None;
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading standard input")?;
        let (key, value) = match args
            .key_separator
            .as_deref()
            .and_then(|separator| line.split_once(separator))
        {
            Some((key, value)) => (Some(key.to_string()), value.to_string()),
            None => (None, line),
        };
        batch_bytes += key.as_ref().map_or(0, String::len) + value.len();
        batch.push((key.map(Bytes::from), Bytes::from(value)));
        if batch.len() >= BATCH_RECORDS_MAX || batch_bytes >= BATCH_BYTES_MAX {
            send_batch(&mut broker, args, &mut batch, &mut span)?;
            batch_bytes = 0;
        }
    }
    send_batch(&mut broker, args, &mut batch, &mut span)?;
    match span {
        Some((first, last)) => println!(
            "produced to {}-{}, offsets {first}..={last}",
            args.topic, args.partition
        ),
        None => println!("nothing to produce: standard input was empty"),
    }
    Ok(())
}

/// Sends and empties `batch` as one record batch with acks=all, widening `span` (the first and
/// last offsets produced so far) by the offsets the broker gave it.
fn send_batch(
    broker: &mut AdminConnection,
    args: &ProduceArgs,
    batch: &mut Vec<(Option<Bytes>, Bytes)>,
    span: &mut Option<(i64, i64)>,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let records = std::mem::take(batch);
    let timestamp = now_ms();
    let count = i64::try_from(records.len())?;
    let records: Vec<(Option<Bytes>, Option<Bytes>)> = records
        .into_iter()
        .map(|(key, value)| (key, Some(value)))
        .collect();
    let encoded = encode_plain_batch(&records, timestamp).map_err(|e| anyhow!(e))?;
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(text(&args.topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(args.partition)
                .with_records(Some(encoded.freeze()))])]);
    let response = broker.send(&request)?;
    let partition = response
        .responses
        .iter()
        .flat_map(|t| t.partition_responses.iter())
        .next()
        .ok_or_else(|| anyhow!("no answer for {}-{}", args.topic, args.partition))?;
    if let Some(error) = ResponseError::try_from_code(partition.error_code) {
        bail!("producing to {}-{}: {error:?}", args.topic, args.partition);
    }
    let (base, last) = (partition.base_offset, partition.base_offset + count - 1);
    *span = Some(span.map_or((base, last), |(first, _)| (first, last)));
    Ok(())
}

/// Runs `causeway consume`.
pub fn consume(args: &ConsumeArgs) -> anyhow::Result<()> {
    let mut broker = AdminConnection::connect(&args.target)?;
    let partitions = [args.partition];
    let mut next = match args.offset {
        Some(offset) => offset,
        None => start_of(&mut broker, args)?,
    };
    let end = latest_offsets(&mut broker, &args.topic, &partitions)?
        .get(&args.partition)
        .copied()
        .filter(|&end| end >= 0)
        .ok_or_else(|| anyhow!("{}-{} does not exist", args.topic, args.partition))?;
    let mut printed = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        let from = next;
        let records = fetch(&mut broker, args, from)?;
        if records.is_empty() && args.count.is_none() {
            return Ok(());
        }
        for (header, bytes) in whole_batches(&records) {
            next = next.max(header.last_offset() + 1);
            if header.is_control() {
                continue;
            }
            let decoded = decode_batch(&header, &bytes)
                .map_err(|e| anyhow!("batch at offset {}: {e}", header.base_offset))?;
            for record in decoded.into_iter().filter(|r| r.offset >= from) {
                let more = match args.count {
                    Some(count) => printed < count,
                    None => record.offset < end,
                };
                if !more {
                    return Ok(());
                }
                let value = record.record.value.as_deref().map(String::from_utf8_lossy);
                if args.json {
                    let key = record.record.key.as_deref().map(String::from_utf8_lossy);
                    let line = json!({
                        "offset": record.offset,
                        "timestamp": record.timestamp,
                        "key": key,
                        "value": value,
                    });
                    writeln!(out, "{line}")?;
                } else {
                    writeln!(out, "{}", value.unwrap_or_default())?;
                }
                printed += 1;
            }
        }
        let done = match args.count {
            Some(count) => printed >= count,
            None => next >= end,
        };
        if done {
            return Ok(());
        }
    }
}

/// The partition's log start.
fn start_of(broker: &mut AdminConnection, args: &ConsumeArgs) -> anyhow::Result<i64> {
    offsets(broker, &args.topic, &[args.partition], EARLIEST)?
        .get(&args.partition)
        .copied()
        .filter(|&start| start >= 0)
        .ok_or_else(|| anyhow!("{}-{} does not exist", args.topic, args.partition))
}

/// The record batches of one Fetch from `offset` (waiting up to half a second for some).
fn fetch(broker: &mut AdminConnection, args: &ConsumeArgs, offset: i64) -> anyhow::Result<Bytes> {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_BYTES)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(text(&args.topic)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(args.partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(FETCH_BYTES)])]);
    let version = broker.version_for::<FetchRequest>()?.min(FETCH_BY_NAME_MAX);
    let response = broker.send_at(&request, version)?;
    let partition = response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .next()
        .ok_or_else(|| anyhow!("no answer for {}-{}", args.topic, args.partition))?;
    if let Some(error) = ResponseError::try_from_code(partition.error_code) {
        bail!(
            "fetching {}-{} at {offset}: {error:?}",
            args.topic,
            args.partition
        );
    }
    Ok(partition.records.clone().unwrap_or_default())
}
