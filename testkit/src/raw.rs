//! A raw Kafka protocol client over a blocking `TcpStream`, built on kafka-protocol's encoders,
//! that can also send malformed frames.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest,
    ProduceRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

/// Client id sent by the raw client.
pub const CLIENT_ID: &str = "causeway-it-raw";

/// What happened when waiting for the peer on a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum PeerOutcome {
    /// The peer closed (EOF) or reset the connection.
    Closed,
    /// The peer sent bytes (the first bytes read).
    Data(Vec<u8>),
    /// Nothing happened within the timeout.
    StillOpen,
}

/// A blocking connection to a Kafka listener.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    next_correlation_id: i32,
}

impl RawClient {
    /// Connects with 10 s read/write timeouts.
    pub fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connect {addr}"))?;
        Self::over(stream)
    }

    /// Connects from the local address `from` (another loopback address, say): a client the
    /// broker counts apart from others on 127.0.0.1, as per-address limits do.
    pub fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> Result<Self> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket
            .bind(&SocketAddr::new(from, 0).into())
            .with_context(|| format!("bind {from}"))?;
        socket
            .connect_timeout(&addr.into(), Duration::from_secs(5))
            .with_context(|| format!("connect {addr} from {from}"))?;
        Self::over(socket.into())
    }

    fn over(stream: TcpStream) -> Result<Self> {
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(RawClient {
            stream,
            next_correlation_id: 1,
        })
    }

    /// The underlying stream.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    fn correlation_id(&mut self) -> i32 {
        let c = self.next_correlation_id;
        self.next_correlation_id += 1;
        c
    }

    /// Encodes a request frame (length prefix, header, body) for a known API.
    pub fn encode_request<R: Request>(&mut self, version: i16, req: &R) -> Result<(i32, BytesMut)> {
        let correlation_id = self.correlation_id();
        let api_key =
            ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown api key {}", R::KEY))?;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut payload = BytesMut::new();
        header
            .encode(&mut payload, api_key.request_header_version(version))
            .context("encode request header")?;
        req.encode(&mut payload, version)
            .context("encode request body")?;
        let mut frame = BytesMut::with_capacity(payload.len() + 4);
        frame.put_i32(payload.len() as i32);
        frame.put_slice(&payload);
        Ok((correlation_id, frame))
    }

    /// Sends a request for a known API and decodes its response.
    pub fn request<R: Request>(&mut self, version: i16, req: &R) -> Result<R::Response> {
        let (correlation_id, frame) = self.encode_request(version, req)?;
        self.write_all(&frame)?;
        self.read_response::<R>(version, correlation_id)
    }

    /// Reads and decodes the response to request `R` sent at `version`.
    pub fn read_response<R: Request>(
        &mut self,
        version: i16,
        correlation_id: i32,
    ) -> Result<R::Response> {
        let api_key =
            ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown api key {}", R::KEY))?;
        let mut frame = self.read_frame()?;
        let header = ResponseHeader::decode(&mut frame, api_key.response_header_version(version))
            .context("decode response header")?;
        if header.correlation_id != correlation_id {
            bail!(
                "correlation id mismatch: sent {correlation_id}, got {}",
                header.correlation_id
            );
        }
        let resp = R::Response::decode(&mut frame, version).context("decode response body")?;
        Ok(resp)
    }

    /// Sends one record batch (or any bytes) to one partition with Produce v9 and returns that
    /// partition's response.
    pub fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        acks: i16,
        records: Bytes,
    ) -> Result<PartitionProduceResponse> {
        let req = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records))])]);
        let resp = self.request(9, &req)?;
        let part = resp
            .responses
            .into_iter()
            .find(|t| t.name.0.as_str() == topic)
            .ok_or_else(|| anyhow!("no response for topic {topic}"))?
            .partition_responses
            .into_iter()
            .find(|p| p.index == partition)
            .ok_or_else(|| anyhow!("no response for partition {partition}"))?;
        Ok(part)
    }

    /// AlterConfigs v1 on one topic (the configs replace all overrides); returns the resource's
    /// error code and message. (rdkafka's `alter_configs` drops per-resource errors.)
    pub fn alter_topic_configs(
        &mut self,
        topic: &str,
        configs: &[(&str, &str)],
        validate_only: bool,
    ) -> Result<(i16, Option<String>)> {
        const RESOURCE_TOPIC: i8 = 2;
        let req = AlterConfigsRequest::default()
            .with_validate_only(validate_only)
            .with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(StrBytes::from_string(topic.to_string()))
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            AlterableConfig::default()
                                .with_name(StrBytes::from_string(k.to_string()))
                                .with_value(Some(StrBytes::from_string(v.to_string())))
                        })
                        .collect(),
                )]);
        let resp = self.request(1, &req)?;
        let r = resp
            .responses
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("empty AlterConfigs response"))?;
        Ok((
            r.error_code,
            r.error_message.map(|m| m.as_str().to_string()),
        ))
    }

    /// Fetch v12 of one partition; returns that partition's data.
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        partition_max_bytes: i32,
        max_wait_ms: i32,
    ) -> Result<PartitionData> {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(partition_max_bytes)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(-1)
                    .with_fetch_offset(offset)
                    .with_last_fetched_epoch(-1)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(partition_max_bytes)])]);
        let resp = self.request(12, &req)?;
        if resp.error_code != 0 {
            bail!("fetch: top-level error {}", resp.error_code);
        }
        resp.responses
            .into_iter()
            .find(|t| t.topic.0.as_str() == topic)
            .ok_or_else(|| anyhow!("no fetch response for topic {topic}"))?
            .partitions
            .into_iter()
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| anyhow!("no fetch response for partition {partition}"))
    }

    /// Writes raw bytes.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).context("write to broker")?;
        self.stream.flush()?;
        Ok(())
    }

    /// Sends a frame whose payload is a hand-made header (any api key/version, header v1 or v2)
    /// followed by `body`. Returns the correlation id.
    pub fn send_raw_request(
        &mut self,
        api_key: i16,
        api_version: i16,
        flexible_header: bool,
        body: &[u8],
    ) -> Result<i32> {
        let correlation_id = self.correlation_id();
        let mut payload = BytesMut::new();
        payload.put_i16(api_key);
        payload.put_i16(api_version);
        payload.put_i32(correlation_id);
        payload.put_i16(CLIENT_ID.len() as i16);
        payload.put_slice(CLIENT_ID.as_bytes());
        if flexible_header {
            payload.put_u8(0); // no tagged fields
        }
        payload.put_slice(body);
        let mut frame = BytesMut::with_capacity(payload.len() + 4);
        frame.put_i32(payload.len() as i32);
        frame.put_slice(&payload);
        self.write_all(&frame)?;
        Ok(correlation_id)
    }

    /// Reads one length-prefixed frame (without the length).
    pub fn read_frame(&mut self) -> Result<Bytes> {
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .context("read frame length")?;
        let len = i32::from_be_bytes(len);
        if !(0..=256 * 1024 * 1024).contains(&len) {
            bail!("bad response frame length {len}");
        }
        let mut buf = vec![0u8; len as usize];
        self.stream
            .read_exact(&mut buf)
            .context("read frame body")?;
        Ok(Bytes::from(buf))
    }

    /// Waits up to `timeout` for the peer to close the connection or send something.
    pub fn wait_for_peer(&mut self, timeout: Duration) -> PeerOutcome {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return PeerOutcome::StillOpen;
            }
            let _ = self
                .stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match self.stream.read(&mut buf) {
                Ok(0) => return PeerOutcome::Closed,
                Ok(n) => return PeerOutcome::Data(buf[..n].to_vec()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return PeerOutcome::StillOpen
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return PeerOutcome::Closed,
            }
        }
    }

    /// Reads until the peer closes the connection (discarding any data) or `timeout` passes;
    /// returns whether it closed.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.wait_for_peer(left) {
                PeerOutcome::Closed => return true,
                PeerOutcome::StillOpen => return false,
                PeerOutcome::Data(_) => continue,
            }
        }
    }
}

/// Sends ApiVersions v3 on a fresh connection and checks the answer is a success with a
/// non-empty API list.
pub fn check_api_versions(addr: SocketAddr) -> Result<ApiVersionsResponse> {
    let mut c = RawClient::connect(addr)?;
    let req = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("causeway-it"))
        .with_client_software_version(StrBytes::from_static_str("0.1"));
    let resp = c.request(3, &req)?;
    if resp.error_code != 0 {
        bail!("ApiVersions v3 error_code {}", resp.error_code);
    }
    if resp.api_keys.is_empty() {
        bail!("ApiVersions v3 returned no APIs");
    }
    Ok(resp)
}

/// Decodes the body of a response frame after its v0 header (correlation id).
pub fn split_v0_header(mut frame: Bytes) -> Result<(i32, Bytes)> {
    if frame.len() < 4 {
        bail!("frame too short for a response header");
    }
    let correlation_id = frame.get_i32();
    Ok((correlation_id, frame))
}

/// Whether an I/O error means the peer closed or reset the connection (a broker refusing it).
pub fn closed_by_peer(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
    )
}
