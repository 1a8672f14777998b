//! The replication stream's messages and their binary encoding. Regions pull from each other over
//! the Kafka port with a private API key ([`REPLICATION_API_KEY`]): the request frame is a Kafka
//! request header v0 (`api_key i16`, `api_version i16`, `correlation_id i32`) followed by a
//! [`PullRequest`] body; the response frame is `correlation_id i32` followed by a
//! [`PullResponse`] body. One pull covers every partition the requester hosts, so a link costs
//! one round trip per pull whatever the partition count. Both ends build and read frames with
//! the same functions ([`pull_frame`], [`split_peer_request`], [`Body::into_response_frame`],
//! [`response_length_ok`]); every varint is `causeway_causal::deps_codec`'s.
//!
//! A region joining the mesh copies each partition from a peer with [`SeedRequest`]s on a second
//! private key ([`SEED_API_KEY`]), framed and authenticated like a pull (see
//! `docs/replication.md`, adding a region).
//!
//! ## Incarnations
//! A partition is named by topic name, topic id and index. The topic id
//! ([`crate::topic_catalog::topic_id`]) is derived from the name and the topic's delete stamp, so
//! it is the same in every region for one incarnation and differs after a delete and re-create.
//! A region that has not yet merged a delete still hosts the old incarnation under the same name;
//! the id keeps the two apart: a peer answers a partition whose id differs from its own with no
//! batches and does not record the requester's clocks for it, and the requester ignores a
//! response partition whose id differs from its own ([`PartitionPull::same_incarnation`]). Each
//! partition is judged alone, so the others keep flowing while the catalogs converge.
//!
//! ## Body encoding (version 1)
//! Integers are LEB128 varints unless noted, strings and byte strings are a varint length then
//! the bytes, vector clocks are [`crate::deps_codec`] varint vectors. Every partition entry, in
//! requests and responses, starts with the topic name, the topic id (16 bytes as is), the
//! partition index and the sender's two clocks. Per batch: origin, seq, HLC, the dependency vector
//! delta-encoded against the previous batch of the same partition
//! ([`crate::deps_codec::encode_delta`]), then the Kafka record batch bytes. Every count and
//! length is bounded before anything is allocated; a malformed body is an error, never a panic.
//!
//! Version 0 had no topic id; version 1 sent the topic catalog alone where version 2 sends it
//! with the security state ([`encode_catalogs`]). A server refuses a version it does not speak
//! by closing the connection, so regions on different versions do not replicate with each
//! other until all run the same one; they never misread each other.

use bytes::Bytes;
use causeway_causal::CausalMeta;

use crate::clock::VectorClock;
use crate::delivery::Batch;
use crate::deps_codec::{
    decode_delta, decode_varint, encode_delta, encode_varint, get_varint, put_varint,
    DepsDecodeError,
};

/// The private Kafka API key of the replication pull, far above Kafka's own keys.
pub const REPLICATION_API_KEY: i16 = 32_000;
/// The body version spoken (and the only one accepted): 1 added the topic id to every
/// partition entry (see the module docs); 2 sends the security state with the topic catalog
/// ([`encode_catalogs`]).
pub const REPLICATION_API_VERSION: i16 = 2;
/// The private Kafka API key of a seed request: a region joining the mesh (or re-seeded)
/// copies one partition's retained log from a peer ([`SeedRequest`]).
pub const SEED_API_KEY: i16 = 32_001;
/// The seed request's body version (the only one accepted): 1 sends the security state with the
/// topic catalog ([`encode_catalogs`]).
pub const SEED_API_VERSION: i16 = 1;

/// The most batch bytes one pull response carries (a soft bound: the batch that crosses it is
/// still sent whole). Links ask for it, and a server grants no more whatever a peer asks, as
/// Kafka caps a follower's fetch with `replica.fetch.response.max.bytes` (10 MiB).
pub const PULL_RESPONSE_BYTES_MAX: u32 = 8 << 20;

/// Bytes of a pull frame's header after the length prefix: API key, version, correlation id.
pub const PULL_HEADER_BYTES: usize = 8;

/// Bytes of a response frame's header after the length prefix: the correlation id.
pub const RESPONSE_HEADER_BYTES: usize = 4;

/// A pull frame as the requester sends it: length prefix, the request header (private API key,
/// [`REPLICATION_API_VERSION`], `correlation_id`), then `body`.
pub fn pull_frame(correlation_id: i32, body: &[u8]) -> Vec<u8> {
    peer_frame(PeerRequest::Pull, correlation_id, body)
}

/// A seed frame, framed like a pull on [`SEED_API_KEY`] and [`SEED_API_VERSION`].
pub fn seed_frame(correlation_id: i32, body: &[u8]) -> Vec<u8> {
    peer_frame(PeerRequest::Seed, correlation_id, body)
}

fn peer_frame(kind: PeerRequest, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(4 + PULL_HEADER_BYTES + body.len());
    frame.extend_from_slice(&frame_length(PULL_HEADER_BYTES + body.len()));
    frame.extend_from_slice(&kind.api_key().to_be_bytes());
    frame.extend_from_slice(&kind.version().to_be_bytes());
    frame.extend_from_slice(&correlation_id.to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

/// The requests regions send each other on private API keys. Both bodies start with the
/// requester's region and secret, so either is authenticated by [`PullRequest::credentials`]
/// before the rest is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRequest {
    /// A [`PullRequest`].
    Pull,
    /// A [`SeedRequest`].
    Seed,
}

impl PeerRequest {
    fn api_key(self) -> i16 {
        match self {
            PeerRequest::Pull => REPLICATION_API_KEY,
            PeerRequest::Seed => SEED_API_KEY,
        }
    }

    /// The one body version a server speaks for this request.
    pub fn version(self) -> i16 {
        match self {
            PeerRequest::Pull => REPLICATION_API_VERSION,
            PeerRequest::Seed => SEED_API_VERSION,
        }
    }
}

/// The header of a request between regions, read by the server from a frame without its
/// length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerHeader {
    /// Which request the body holds.
    pub kind: PeerRequest,
    /// The body version the requester speaks.
    pub version: i16,
    /// Echoed in the response.
    pub correlation_id: i32,
}

/// Splits a frame (without its length prefix) into its header and body; `None` if it is not on
/// a private API key (a Kafka request) or too short to hold the header.
pub fn split_peer_request(frame: &[u8]) -> Option<(PeerHeader, &[u8])> {
    let header = frame.get(..PULL_HEADER_BYTES)?;
    let kind = match i16::from_be_bytes([header[0], header[1]]) {
        REPLICATION_API_KEY => PeerRequest::Pull,
        SEED_API_KEY => PeerRequest::Seed,
        _ => return None,
    };
    let parsed = PeerHeader {
        kind,
        version: i16::from_be_bytes([header[2], header[3]]),
        correlation_id: i32::from_be_bytes([header[4], header[5], header[6], header[7]]),
    };
    Some((parsed, &frame[PULL_HEADER_BYTES..]))
}

/// A response body as pieces sent in order: runs of encoded fields, and batch payloads of at
/// least [`SHARED_PAYLOAD_BYTES_MIN`] by reference. A pull or seed answer carries up to 8 MiB of
/// batches; encoding them by reference spares copying each into the body and again into the
/// frame.
#[derive(Debug, Default)]
pub struct Body {
    pieces: Vec<Bytes>,
    open: Vec<u8>,
}

/// Payloads shorter than this are copied into the encoded run around them: a piece costs a
/// write of its own, which is worth it only past a few pages.
pub const SHARED_PAYLOAD_BYTES_MIN: usize = 16 << 10;

impl Body {
    fn put_payload(&mut self, payload: &Bytes) {
        put_varint(payload.len() as u64, &mut self.open);
        if payload.len() < SHARED_PAYLOAD_BYTES_MIN {
            self.open.extend_from_slice(payload);
        } else {
            self.close_run();
            self.pieces.push(payload.clone());
        }
    }

    fn close_run(&mut self) {
        if !self.open.is_empty() {
            self.pieces
                .push(Bytes::from(std::mem::take(&mut self.open)));
        }
    }

    /// The body's pieces, in order.
    pub fn into_pieces(mut self) -> Vec<Bytes> {
        self.close_run();
        self.pieces
    }

    /// The body in one buffer, as the requester reads it.
    pub fn into_bytes(self) -> Bytes {
        let mut pieces = self.into_pieces();
        if pieces.len() == 1 {
            return pieces.pop().unwrap_or_default();
        }
        Bytes::from(pieces.concat())
    }

    /// The response frame carrying this body, as pieces: the length prefix and
    /// `correlation_id`, then the body's own pieces.
    pub fn into_response_frame(self, correlation_id: i32) -> Vec<Bytes> {
        let body = self.into_pieces();
        let length = RESPONSE_HEADER_BYTES + body.iter().map(Bytes::len).sum::<usize>();
        let mut header = Vec::with_capacity(4 + RESPONSE_HEADER_BYTES);
        header.extend_from_slice(&frame_length(length));
        header.extend_from_slice(&correlation_id.to_be_bytes());
        std::iter::once(Bytes::from(header)).chain(body).collect()
    }
}

/// Whether a response's length prefix is one the requester reads: at least its header, at most
/// [`MESSAGE_BYTES_MAX`].
pub fn response_length_ok(length: usize) -> bool {
    (RESPONSE_HEADER_BYTES..=MESSAGE_BYTES_MAX).contains(&length)
}

/// The length prefix; messages are bounded far below `u32::MAX` by [`MESSAGE_BYTES_MAX`], so a
/// larger one is saturated (and refused by the reader) rather than wrapped.
fn frame_length(length: usize) -> [u8; 4] {
    u32::try_from(length).unwrap_or(u32::MAX).to_be_bytes()
}

/// A Kafka topic id: which incarnation of a topic name (see [`crate::topic_catalog::topic_id`]).
pub type TopicId = [u8; 16];

/// Most partitions one message may name.
const PARTITIONS_MAX: usize = 1 << 20;
/// Most origins one pull may name.
const ORIGINS_MAX: usize = 1024;
/// Most batches one partition entry may carry.
const BATCHES_MAX: usize = 1 << 20;
/// Longest replication message, and so longest byte string in one (batch, secret, catalog):
/// both ends bound what they read by it.
pub const MESSAGE_BYTES_MAX: usize = 256 << 20;

/// What a pulling region asks a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// The requesting region's id.
    pub region: u32,
    /// The shared inter-region secret, proving the requester is one of ours.
    pub secret: Vec<u8>,
    /// How long the peer may hold the pull when it has nothing new (long poll).
    pub max_wait_ms: u32,
    /// A soft bound on the response's batch bytes.
    pub max_bytes: u32,
    /// Digest of the requester's topic catalog: the peer sends its own catalog when it differs.
    pub catalog_digest: u64,
    /// The origins whose batches the requester wants from this peer; empty means all. A region
    /// pulls each origin's batches from the origin itself, and from other peers only while its
    /// link to that origin is down, so a healthy mesh carries each batch once per region.
    pub origins: Vec<u32>,
    /// Every partition the requester hosts, with its clocks.
    pub partitions: Vec<PartitionPull>,
}

/// One partition of a pull: "everything above `have`", and what the requester keeps durably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPull {
    /// Topic name.
    pub topic: String,
    /// The incarnation of the topic the requester hosts; the peer serves only the same one.
    pub topic_id: TopicId,
    /// Partition index.
    pub partition: u32,
    /// The requester's vector clock for the partition.
    pub have: VectorClock,
    /// The requester's durable clock (for the stable cut).
    pub durable: VectorClock,
}

impl PartitionPull {
    /// Whether the requester names the incarnation `hosted` (the server's current topic id):
    /// only then may its batches be served and its clocks recorded.
    pub fn same_incarnation(&self, hosted: &TopicId) -> bool {
        self.topic_id == *hosted
    }
}

/// Why a pull was refused as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullError {
    /// Served.
    None,
    /// The secret did not match.
    AuthenticationFailed,
    /// The requester's region id is not a configured peer.
    UnknownRegion,
    /// A seed named a partition (or incarnation) the server does not host.
    UnknownPartition,
}

impl PullError {
    fn code(self) -> u64 {
        match self {
            PullError::None => 0,
            PullError::AuthenticationFailed => 1,
            PullError::UnknownRegion => 2,
            PullError::UnknownPartition => 3,
        }
    }

    fn from_code(code: u64) -> Result<PullError, WireError> {
        match code {
            0 => Ok(PullError::None),
            1 => Ok(PullError::AuthenticationFailed),
            2 => Ok(PullError::UnknownRegion),
            3 => Ok(PullError::UnknownPartition),
            _ => Err(WireError::Malformed("unknown error code")),
        }
    }
}

/// A peer's answer to a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullResponse {
    /// Whether the pull was served.
    pub error: PullError,
    /// The serving region's id.
    pub region: u32,
    /// The serving region's encoded topic catalog, sent when the digests differed.
    pub catalog: Option<Vec<u8>>,
    /// Per partition the server hosts and the requester named: its clocks and the batches.
    pub partitions: Vec<PartitionBatches>,
}

/// One partition of a pull response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionBatches {
    /// Topic name.
    pub topic: String,
    /// The incarnation of the topic the server hosts; the requester applies only the same one.
    pub topic_id: TopicId,
    /// Partition index.
    pub partition: u32,
    /// The server's vector clock for the partition.
    pub have: VectorClock,
    /// The server's durable clock.
    pub durable: VectorClock,
    /// The durable clocks the server last heard from other regions (not the requester's), so
    /// the stable cut advances even between regions whose direct link is down.
    pub relayed: Vec<(u32, VectorClock)>,
    /// Batches the requester lacks, in the server's log order.
    pub batches: Vec<Batch<Bytes>>,
}

impl PartitionBatches {
    /// Whether the server answered for the incarnation `hosted` (the requester's current topic
    /// id): only then may its batches be applied and its clocks recorded.
    pub fn same_incarnation(&self, hosted: &TopicId) -> bool {
        self.topic_id == *hosted
    }
}

/// Why a body did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The body ended early.
    #[error("replication message truncated")]
    Truncated,
    /// A count, length or value out of bounds, or bytes left over.
    #[error("replication message malformed: {0}")]
    Malformed(&'static str),
    /// A dependency vector or clock that does not decode.
    #[error("replication message: {0}")]
    Deps(#[from] DepsDecodeError),
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, WireError> {
        get_varint(self.buf, &mut self.at).map_err(|e| match e {
            DepsDecodeError::Truncated => WireError::Truncated,
            other => WireError::Deps(other),
        })
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        u32::try_from(self.varint()?).map_err(|_| WireError::Malformed("value beyond 32 bits"))
    }

    fn count(&mut self, max: usize) -> Result<usize, WireError> {
        let count = self.varint()?;
        usize::try_from(count)
            .ok()
            .filter(|&c| c <= max)
            .ok_or(WireError::Malformed("count out of bounds"))
    }

    fn bytes(&mut self, max: usize) -> Result<&'a [u8], WireError> {
        let len = self.count(max)?;
        let end = self.at.checked_add(len).ok_or(WireError::Truncated)?;
        let out = self.buf.get(self.at..end).ok_or(WireError::Truncated)?;
        self.at = end;
        Ok(out)
    }

    fn topic(&mut self) -> Result<String, WireError> {
        let raw = self.bytes(crate::topic_catalog::MAX_TOPIC_NAME_LEN)?;
        String::from_utf8(raw.to_vec()).map_err(|_| WireError::Malformed("topic is not UTF-8"))
    }

    fn topic_id(&mut self) -> Result<TopicId, WireError> {
        let end = self.at.checked_add(16).ok_or(WireError::Truncated)?;
        let raw = self.buf.get(self.at..end).ok_or(WireError::Truncated)?;
        let mut id = [0u8; 16];
        id.copy_from_slice(raw);
        self.at = end;
        Ok(id)
    }

    fn clock(&mut self) -> Result<VectorClock, WireError> {
        let rest = self.buf.get(self.at..).ok_or(WireError::Truncated)?;
        let (deps, used) = decode_varint(rest)?;
        self.at += used;
        Ok(VectorClock::from_deps(&deps))
    }

    fn deps_after(&mut self, previous: &[(u32, u64)]) -> Result<Vec<(u32, u64)>, WireError> {
        let rest = self.buf.get(self.at..).ok_or(WireError::Truncated)?;
        let (deps, used) = decode_delta(previous, rest)?;
        self.at += used;
        Ok(deps)
    }

    /// A batch list: the count, then per batch its metadata (dependencies delta-encoded
    /// against the previous batch's) and its bytes, sliced out of `owner` (the buffer being
    /// read) without copying.
    fn batches(&mut self, owner: &Bytes) -> Result<Vec<Batch<Bytes>>, WireError> {
        let count = self.count(BATCHES_MAX)?;
        let mut batches: Vec<Batch<Bytes>> = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let origin_region = self.u32()?;
            let origin_seq = self.varint()?;
            let hlc = self.varint()?;
            let previous = batches.last().map_or(&[][..], |b| &b.meta.deps[..]);
            let deps = self.deps_after(previous)?;
            let payload = owner.slice_ref(self.bytes(MESSAGE_BYTES_MAX)?);
            batches.push(Batch {
                meta: CausalMeta {
                    origin_region,
                    origin_seq,
                    hlc,
                    deps,
                },
                payload,
            });
        }
        Ok(batches)
    }

    fn finish(self) -> Result<(), WireError> {
        if self.at == self.buf.len() {
            Ok(())
        } else {
            Err(WireError::Malformed("trailing bytes"))
        }
    }
}

/// The catalogs a region sends a peer whose digest differs ([`PullResponse::catalog`], and a
/// seed's): its topic catalog and its security state (users and ACL bindings), each as its own
/// crate encodes it, as two byte strings.
pub fn encode_catalogs(topics: &[u8], security: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(topics.len() + security.len() + 10);
    put_bytes(topics, &mut out);
    put_bytes(security, &mut out);
    out
}

/// Splits what [`encode_catalogs`] wrote into the topic catalog and the security state.
pub fn decode_catalogs(bytes: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let mut reader = Reader { buf: bytes, at: 0 };
    let topics = reader.bytes(MESSAGE_BYTES_MAX)?;
    let security = reader.bytes(MESSAGE_BYTES_MAX)?;
    reader.finish()?;
    Ok((topics, security))
}

/// The digest a region sends with every pull: its topic catalog's and its security state's
/// combined, so a change to either makes the peer send both.
pub fn catalogs_digest(topics: u64, security: u64) -> u64 {
    topics ^ security.rotate_left(32).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn put_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    put_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// What [`Reader::batches`] reads.
fn put_batches(batches: &[Batch<Bytes>], out: &mut Body) {
    put_varint(batches.len() as u64, &mut out.open);
    let mut previous: &[(u32, u64)] = &[];
    for batch in batches {
        put_varint(u64::from(batch.meta.origin_region), &mut out.open);
        put_varint(batch.meta.origin_seq, &mut out.open);
        put_varint(batch.meta.hlc, &mut out.open);
        encode_delta(previous, &batch.meta.deps, &mut out.open);
        previous = &batch.meta.deps;
        out.put_payload(&batch.payload);
    }
}

fn put_clock(clock: &VectorClock, out: &mut Vec<u8>) {
    encode_varint(&clock.to_deps(), out);
}

/// What requests and responses say first about a partition: its name, incarnation and index,
/// and the sender's clocks.
fn put_partition_head(
    topic: &str,
    topic_id: &TopicId,
    partition: u32,
    have: &VectorClock,
    durable: &VectorClock,
    out: &mut Vec<u8>,
) {
    put_bytes(topic.as_bytes(), out);
    out.extend_from_slice(topic_id);
    put_varint(u64::from(partition), out);
    put_clock(have, out);
    put_clock(durable, out);
}

impl PullRequest {
    /// The body bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.partitions.len() * 48);
        put_varint(u64::from(self.region), &mut out);
        put_bytes(&self.secret, &mut out);
        put_varint(u64::from(self.max_wait_ms), &mut out);
        put_varint(u64::from(self.max_bytes), &mut out);
        put_varint(self.catalog_digest, &mut out);
        put_varint(self.origins.len() as u64, &mut out);
        for origin in &self.origins {
            put_varint(u64::from(*origin), &mut out);
        }
        put_varint(self.partitions.len() as u64, &mut out);
        for p in &self.partitions {
            put_partition_head(
                &p.topic,
                &p.topic_id,
                p.partition,
                &p.have,
                &p.durable,
                &mut out,
            );
        }
        out
    }

    /// Reads only the requester's region and secret off the front of a body, so a pull can
    /// be authenticated before anything else in it is decoded.
    pub fn credentials(buf: &[u8]) -> Result<(u32, &[u8]), WireError> {
        let mut r = Reader { buf, at: 0 };
        let region = r.u32()?;
        let secret = r.bytes(MESSAGE_BYTES_MAX)?;
        Ok((region, secret))
    }

    /// Decodes a body, refusing anything malformed.
    pub fn decode(buf: &[u8]) -> Result<PullRequest, WireError> {
        let mut r = Reader { buf, at: 0 };
        let region = r.u32()?;
        let secret = r.bytes(MESSAGE_BYTES_MAX)?.to_vec();
        let max_wait_ms = r.u32()?;
        let max_bytes = r.u32()?;
        let catalog_digest = r.varint()?;
        let origin_count = r.count(ORIGINS_MAX)?;
        let origins = (0..origin_count)
            .map(|_| r.u32())
            .collect::<Result<Vec<_>, _>>()?;
        let count = r.count(PARTITIONS_MAX)?;
        let mut partitions = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            partitions.push(PartitionPull {
                topic: r.topic()?,
                topic_id: r.topic_id()?,
                partition: r.u32()?,
                have: r.clock()?,
                durable: r.clock()?,
            });
        }
        r.finish()?;
        Ok(PullRequest {
            region,
            secret,
            max_wait_ms,
            max_bytes,
            catalog_digest,
            origins,
            partitions,
        })
    }
}

impl PullResponse {
    /// The body, batch payloads by reference.
    pub fn encode(&self) -> Body {
        let mut body = Body::default();
        let out = &mut body.open;
        put_varint(self.error.code(), out);
        put_varint(u64::from(self.region), out);
        match &self.catalog {
            Some(catalog) => {
                out.push(1);
                put_bytes(catalog, out);
            }
            None => out.push(0),
        }
        put_varint(self.partitions.len() as u64, out);
        for p in &self.partitions {
            let out = &mut body.open;
            put_partition_head(&p.topic, &p.topic_id, p.partition, &p.have, &p.durable, out);
            put_varint(p.relayed.len() as u64, out);
            for (region, clock) in &p.relayed {
                put_varint(u64::from(*region), out);
                put_clock(clock, out);
            }
            put_batches(&p.batches, &mut body);
        }
        body
    }

    /// Decodes a body, refusing anything malformed. Batch payloads are slices of `buf`.
    pub fn decode(buf: &Bytes) -> Result<PullResponse, WireError> {
        let mut r = Reader { buf, at: 0 };
        let error = PullError::from_code(r.varint()?)?;
        let region = r.u32()?;
        let catalog = match r.varint()? {
            0 => None,
            1 => Some(r.bytes(MESSAGE_BYTES_MAX)?.to_vec()),
            _ => return Err(WireError::Malformed("catalog flag")),
        };
        let count = r.count(PARTITIONS_MAX)?;
        let mut partitions = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let topic = r.topic()?;
            let topic_id = r.topic_id()?;
            let partition = r.u32()?;
            let have = r.clock()?;
            let durable = r.clock()?;
            let relayed_count = r.count(ORIGINS_MAX)?;
            let relayed = (0..relayed_count)
                .map(|_| Ok((r.u32()?, r.clock()?)))
                .collect::<Result<Vec<_>, WireError>>()?;
            let batches = r.batches(buf)?;
            partitions.push(PartitionBatches {
                topic,
                topic_id,
                partition,
                have,
                durable,
                relayed,
                batches,
            });
        }
        r.finish()?;
        Ok(PullResponse {
            error,
            region,
            catalog,
            partitions,
        })
    }
}

/// What a joining region asks a peer for one partition: its retained log from `from_offset`
/// (offsets are the server's own), so the region starts with a copy of the peer's data instead
/// of pulls that can never deliver what retention or compaction removed there. The body starts
/// like a pull's (region, secret), then the partition and the position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedRequest {
    /// The requesting region's id.
    pub region: u32,
    /// The shared inter-region secret.
    pub secret: Vec<u8>,
    /// Topic name.
    pub topic: String,
    /// The incarnation the requester hosts (from the catalog it merged).
    pub topic_id: TopicId,
    /// Partition index.
    pub partition: u32,
    /// The server's offset to copy from: 0 on the first request, then the previous answer's
    /// `next_offset`.
    pub from_offset: u64,
    /// A soft bound on the answer's batch bytes (the server grants at most
    /// [`PULL_RESPONSE_BYTES_MAX`]).
    pub max_bytes: u32,
}

/// A peer's answer to a [`SeedRequest`]: the next batches of its retained log, as stored
/// (compacted segments' merged rows included) with their causal metadata, never past what it
/// had made durable when it read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedResponse {
    /// Whether the request was served.
    pub error: PullError,
    /// The serving region's id.
    pub region: u32,
    /// The server's durable end of the log: the copy is complete once `next_offset` reaches it.
    pub end_offset: u64,
    /// Where the next request starts.
    pub next_offset: u64,
    /// Per origin, the highest sequence the server removed from this log (retention,
    /// DeleteRecords, compaction), read after the batches: joined into the copy's clock, it
    /// covers exactly what the server no longer holds below `next_offset`.
    pub removed: VectorClock,
    /// The durable clock the requester last reported to the server for this partition (empty
    /// if none since the server started): a requester seeded again must end with a copy that
    /// covers it, or it held batches the server lacks.
    pub requester_durable: VectorClock,
    /// The batches, in the server's log order.
    pub batches: Vec<Batch<Bytes>>,
}

impl SeedRequest {
    /// The body bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.topic.len() + self.secret.len());
        put_varint(u64::from(self.region), &mut out);
        put_bytes(&self.secret, &mut out);
        put_bytes(self.topic.as_bytes(), &mut out);
        out.extend_from_slice(&self.topic_id);
        put_varint(u64::from(self.partition), &mut out);
        put_varint(self.from_offset, &mut out);
        put_varint(u64::from(self.max_bytes), &mut out);
        out
    }

    /// Decodes a body, refusing anything malformed.
    pub fn decode(buf: &[u8]) -> Result<SeedRequest, WireError> {
        let mut r = Reader { buf, at: 0 };
        let request = SeedRequest {
            region: r.u32()?,
            secret: r.bytes(MESSAGE_BYTES_MAX)?.to_vec(),
            topic: r.topic()?,
            topic_id: r.topic_id()?,
            partition: r.u32()?,
            from_offset: r.varint()?,
            max_bytes: r.u32()?,
        };
        r.finish()?;
        Ok(request)
    }
}

impl SeedResponse {
    /// An answer with no batches: a refusal (`error`), or nothing to copy.
    pub fn refusal(error: PullError, region: u32) -> SeedResponse {
        SeedResponse {
            error,
            region,
            end_offset: 0,
            next_offset: 0,
            removed: VectorClock::default(),
            requester_durable: VectorClock::default(),
            batches: Vec::new(),
        }
    }

    /// The body, batch payloads by reference.
    pub fn encode(&self) -> Body {
        let mut body = Body::default();
        let out = &mut body.open;
        put_varint(self.error.code(), out);
        put_varint(u64::from(self.region), out);
        put_varint(self.end_offset, out);
        put_varint(self.next_offset, out);
        put_clock(&self.removed, out);
        put_clock(&self.requester_durable, out);
        put_batches(&self.batches, &mut body);
        body
    }

    /// Decodes a body, refusing anything malformed. Batch payloads are slices of `buf`.
    pub fn decode(buf: &Bytes) -> Result<SeedResponse, WireError> {
        let mut r = Reader { buf, at: 0 };
        let response = SeedResponse {
            error: PullError::from_code(r.varint()?)?,
            region: r.u32()?,
            end_offset: r.varint()?,
            next_offset: r.varint()?,
            removed: r.clock()?,
            requester_durable: r.clock()?,
            batches: r.batches(buf)?,
        };
        r.finish()?;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn frames_round_trip_through_the_functions_both_ends_use() {
        let pull = pull_frame(7, b"body");
        let length = u32::from_be_bytes([pull[0], pull[1], pull[2], pull[3]]) as usize;
        assert_eq!(length, pull.len() - 4);
        let (header, body) = split_peer_request(&pull[4..]).expect("a pull");
        assert_eq!(
            header,
            PeerHeader {
                kind: PeerRequest::Pull,
                version: REPLICATION_API_VERSION,
                correlation_id: 7
            }
        );
        assert_eq!(body, b"body");
        let seed = seed_frame(8, b"copy");
        let (header, body) = split_peer_request(&seed[4..]).expect("a seed");
        assert_eq!(
            (header.kind, header.version, header.correlation_id, body),
            (PeerRequest::Seed, SEED_API_VERSION, 8, &b"copy"[..])
        );
        assert_eq!(
            split_peer_request(&[0, 3, 0, 12, 0, 0, 0, 1]),
            None,
            "Metadata v12"
        );
        assert_eq!(split_peer_request(&pull[4..10]), None, "too short");
        let body = SeedResponse::refusal(PullError::UnknownPartition, 3).encode();
        let response = body.into_response_frame(7).concat();
        let length = u32::from_be_bytes([response[0], response[1], response[2], response[3]]);
        assert!(response_length_ok(length as usize));
        assert_eq!(length as usize, response.len() - 4);
        assert_eq!(&response[4..8], &7i32.to_be_bytes());
        let answer = SeedResponse::decode(&Bytes::copy_from_slice(&response[8..]));
        assert_eq!(answer.map(|a| a.error), Ok(PullError::UnknownPartition));
        assert!(!response_length_ok(3));
        assert!(!response_length_ok(MESSAGE_BYTES_MAX + 1));
    }

    use proptest::prelude::*;

    use super::*;
    use crate::topic_catalog::{topic_id, CatalogStamp};

    fn clock(entries: &[(u32, u64)]) -> VectorClock {
        VectorClock::from_deps(entries)
    }

    fn sample_response() -> PullResponse {
        let batch = |origin, seq, deps: &[(u32, u64)], payload: &'static [u8]| Batch {
            meta: CausalMeta {
                origin_region: origin,
                origin_seq: seq,
                hlc: 1 << 40 | seq,
                deps: deps.to_vec(),
            },
            payload: Bytes::from_static(payload),
        };
        PullResponse {
            error: PullError::None,
            region: 7,
            catalog: Some(b"catalog".to_vec()),
            partitions: vec![PartitionBatches {
                topic: "orders".into(),
                topic_id: topic_id("orders", Some(CatalogStamp::new(1 << 41, 9))),
                partition: 3,
                have: clock(&[(7, 2), (9, 1)]),
                durable: clock(&[(7, 1)]),
                relayed: vec![(11, clock(&[(7, 1), (11, 4)]))],
                batches: vec![
                    batch(7, 1, &[], b"first"),
                    batch(9, 1, &[(7, 1)], b"second"),
                    batch(7, 2, &[(7, 1), (9, 1)], b"third"),
                ],
            }],
        }
    }

    #[test]
    fn messages_round_trip() {
        let request = PullRequest {
            region: 9,
            secret: b"s3cret".to_vec(),
            max_wait_ms: 500,
            max_bytes: 1 << 20,
            catalog_digest: u64::MAX,
            origins: vec![7],
            partitions: vec![
                PartitionPull {
                    topic: "orders".into(),
                    topic_id: topic_id("orders", None),
                    partition: 0,
                    have: clock(&[(7, 10)]),
                    durable: clock(&[(7, 9)]),
                },
                PartitionPull {
                    topic: "audit".into(),
                    topic_id: [0xff; 16],
                    partition: 2,
                    have: clock(&[]),
                    durable: clock(&[]),
                },
            ],
        };
        assert_eq!(PullRequest::decode(&request.encode()), Ok(request));
        let response = sample_response();
        assert_eq!(
            PullResponse::decode(&response.encode().into_bytes()),
            Ok(response)
        );
    }

    #[test]
    fn large_payloads_travel_by_reference_and_are_read_back_without_a_copy() {
        let big = Bytes::from(vec![7u8; SHARED_PAYLOAD_BYTES_MIN]);
        let small = Bytes::from(vec![9u8; SHARED_PAYLOAD_BYTES_MIN - 1]);
        let mut response = sample_response();
        response.partitions[0].batches[0].payload = big.clone();
        response.partitions[0].batches[1].payload = small.clone();
        let frame = response.encode().into_response_frame(5);
        assert!(
            frame.iter().any(|piece| piece.as_ptr() == big.as_ptr()),
            "the large payload is a piece of its own"
        );
        assert!(
            frame.iter().all(|piece| piece.as_ptr() != small.as_ptr()),
            "the small one is copied into the run around it"
        );
        let whole = Bytes::from(frame.concat());
        let length = u32::from_be_bytes([whole[0], whole[1], whole[2], whole[3]]) as usize;
        assert_eq!(length, whole.len() - 4);
        let body = whole.slice(8..);
        let decoded = PullResponse::decode(&body).expect("decodes");
        assert_eq!(decoded, response);
        let read = &decoded.partitions[0].batches[0].payload;
        let within = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
        assert!(
            within.contains(&(read.as_ptr() as usize)),
            "the payload read back is a slice of the body"
        );
    }

    #[test]
    fn seed_messages_round_trip_and_share_the_pulls_credentials() {
        let request = SeedRequest {
            region: 9,
            secret: b"s3cret".to_vec(),
            topic: "orders".into(),
            topic_id: topic_id("orders", None),
            partition: 2,
            from_offset: 1 << 33,
            max_bytes: 1 << 20,
        };
        let body = request.encode();
        assert_eq!(SeedRequest::decode(&body), Ok(request));
        assert_eq!(
            PullRequest::credentials(&body),
            Ok((9, &b"s3cret"[..])),
            "admitted by the same front as a pull"
        );
        let response = SeedResponse {
            error: PullError::None,
            region: 7,
            end_offset: 40,
            next_offset: 12,
            removed: clock(&[(7, 3), (9, 1)]),
            requester_durable: clock(&[(9, 2)]),
            batches: sample_response().partitions.remove(0).batches,
        };
        let body = response.encode().into_bytes();
        assert_eq!(SeedResponse::decode(&body), Ok(response));
        for cut in 0..body.len() {
            assert!(
                SeedResponse::decode(&body.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
        let refusal = SeedResponse::refusal(PullError::UnknownPartition, 7)
            .encode()
            .into_bytes();
        assert_eq!(
            SeedResponse::decode(&refusal).map(|r| r.error),
            Ok(PullError::UnknownPartition)
        );
    }

    #[test]
    fn the_topic_id_travels_as_sixteen_bytes_after_the_name() {
        let id = topic_id("orders", Some(CatalogStamp::new(5, 1)));
        let pull = PartitionPull {
            topic: "orders".into(),
            topic_id: id,
            partition: 1,
            have: clock(&[]),
            durable: clock(&[]),
        };
        let mut head = Vec::new();
        put_partition_head(&pull.topic, &id, 1, &pull.have, &pull.durable, &mut head);
        assert_eq!(head[0], 6, "name length");
        assert_eq!(&head[1..7], b"orders");
        assert_eq!(&head[7..23], &id[..]);
        assert_eq!(head[23], 1, "partition index");
        // Any id decodes, and a body cut inside the id is truncated, not misread.
        let request = PullRequest {
            region: 1,
            secret: Vec::new(),
            max_wait_ms: 0,
            max_bytes: 0,
            catalog_digest: 0,
            origins: Vec::new(),
            partitions: vec![pull],
        };
        let bytes = request.encode();
        let id_end = bytes.len() - 3; // partition index and two empty clocks follow the id
        for cut in id_end - 16..id_end {
            assert_eq!(
                PullRequest::decode(&bytes[..cut]),
                Err(WireError::Truncated),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn only_the_same_incarnation_is_served_or_applied() {
        let old = topic_id("orders", None);
        let new = topic_id("orders", Some(CatalogStamp::new(1 << 41, 7)));
        let other_name = topic_id("payments", None);
        assert_ne!(old, new, "a re-created topic is another incarnation");
        let pull = |topic_id| PartitionPull {
            topic: "orders".into(),
            topic_id,
            partition: 0,
            have: clock(&[]),
            durable: clock(&[]),
        };
        assert!(pull(old).same_incarnation(&old));
        assert!(!pull(old).same_incarnation(&new));
        assert!(!pull(new).same_incarnation(&old));
        assert!(!pull(old).same_incarnation(&other_name));
        let mut answer = sample_response().partitions.remove(0);
        answer.topic_id = new;
        assert!(answer.same_incarnation(&new));
        assert!(!answer.same_incarnation(&old));
    }

    #[test]
    fn every_truncation_and_trailing_byte_is_refused() {
        let bytes = sample_response().encode().into_bytes();
        for cut in 0..bytes.len() {
            assert!(
                PullResponse::decode(&bytes.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(PullResponse::decode(&Bytes::from(longer)).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = PullRequest::decode(&bytes);
            let _ = PullResponse::decode(&Bytes::from(bytes));
        }
    }

    #[test]
    fn catalogs_travel_together_and_malformed_envelopes_are_refused() {
        let bytes = encode_catalogs(b"topics", b"security");
        assert_eq!(
            decode_catalogs(&bytes).expect("decode"),
            (&b"topics"[..], &b"security"[..])
        );
        for len in 0..bytes.len() {
            assert!(decode_catalogs(&bytes[..len]).is_err(), "{len}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode_catalogs(&trailing).is_err());
        assert_ne!(catalogs_digest(1, 2), catalogs_digest(1, 3));
        assert_ne!(catalogs_digest(1, 2), catalogs_digest(2, 2));
    }
}
