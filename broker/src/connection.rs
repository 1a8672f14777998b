//! One client connection: read length-prefixed frames (refusing oversized ones before buffering
//! them), decode, dispatch, and write responses in request order. Requests on one connection are
//! handled one at a time, as Kafka does; clients pipeline by sending several before reading.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use causeway_protocol::frame::{check_frame, FrameCheck, FRAME_PREFIX_BYTES};
use causeway_protocol::request::{decode_request, RequestError};
use causeway_protocol::response::{api_versions_body, encode_response};
use causeway_replication::wire::{REPLICATION_API_KEY, REPLICATION_API_VERSION};
use kafka_protocol::messages::{ApiKey, ResponseKind};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::replication::serve::Served;
use crate::{handlers, metrics, replication};

/// Read buffer growth step; frames larger than this grow the buffer to their exact size.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// What to do after one frame.
enum Outcome {
    /// Send these bytes.
    Respond(Bytes),
    /// Send nothing (Produce with acks=0).
    Silent,
    /// Close the connection for this reason.
    Close(String),
    /// Send these bytes, then close the connection for this reason.
    RespondAndClose(Bytes, String),
}

/// Bytes of the replication request header: api key, api version, correlation id.
const REPLICATION_HEADER_BYTES: usize = 8;

/// Serves one connection until the client closes it, it breaks the protocol, or shutdown.
pub async fn serve(stream: TcpStream, broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let peer = stream.peer_addr().ok();
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(?peer, %error, "set_nodelay failed");
    }
    let client = handlers::ClientContext {
        host: peer.map(|p| format!("/{}", p.ip())).unwrap_or_default(),
    };
    let (mut reader, writer) = stream.into_split();
    let mut writer = BufWriter::with_capacity(READ_CHUNK_BYTES, writer);
    let mut buffered = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let frame_bytes_max = broker.options.socket_request_max_bytes as usize;
    loop {
        match check_frame(&buffered, frame_bytes_max) {
            Err(error) => {
                tracing::warn!(?peer, %error, "closing connection");
                metrics::connection_closed_for_bad_input();
                return;
            }
            Ok(FrameCheck::Complete { body_bytes }) => {
                let mut frame = buffered.split_to(FRAME_PREFIX_BYTES + body_bytes);
                let body = frame.split_off(FRAME_PREFIX_BYTES).freeze();
                match process(&broker, body, &client).await {
                    Outcome::Respond(bytes) => {
                        if writer.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                    Outcome::Silent => {}
                    Outcome::RespondAndClose(bytes, reason) => {
                        tracing::warn!(?peer, %reason, "closing connection");
                        let _ = writer.write_all(&bytes).await;
                        let _ = writer.flush().await;
                        return;
                    }
                    Outcome::Close(reason) => {
                        tracing::warn!(?peer, %reason, "closing connection");
                        metrics::connection_closed_for_bad_input();
                        let _ = writer.flush().await;
                        return;
                    }
                }
                let another_is_buffered = matches!(
                    check_frame(&buffered, frame_bytes_max),
                    Ok(FrameCheck::Complete { .. })
                );
                if !another_is_buffered && writer.flush().await.is_err() {
                    return;
                }
                if *shutdown.borrow() {
                    return;
                }
            }
            Ok(FrameCheck::Incomplete { needed }) => {
                let wanted = needed.unwrap_or(FRAME_PREFIX_BYTES).max(buffered.len() + 1);
                let spare = buffered.capacity() - buffered.len();
                if spare < wanted - buffered.len() || spare < 4096 {
                    buffered.reserve((wanted - buffered.len()).max(READ_CHUNK_BYTES));
                }
                tokio::select! {
                    read = reader.read_buf(&mut buffered) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    },
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

/// Decodes and handles one frame body.
async fn process(broker: &Arc<Broker>, body: Bytes, client: &handlers::ClientContext) -> Outcome {
    let started = Instant::now();
    if let Some(pull) = replication_pull(&body) {
        return serve_replication(broker, pull).await;
    }
    let request = match decode_request(body) {
        Ok(request) => request,
        Err(RequestError::UnsupportedVersion {
            api_key: ApiKey::ApiVersions,
            correlation_id,
            ..
        }) => {
            // Kafka's answer: a v0 reply with UNSUPPORTED_VERSION and the ranges we do support.
            let reply = ResponseKind::ApiVersions(api_versions_body(
                ResponseError::UnsupportedVersion.code(),
            ));
            return respond(correlation_id, ApiKey::ApiVersions, 0, &reply);
        }
        Err(error) => return Outcome::Close(error.to_string()),
    };
    let api_key = request.api_key;
    let version = request.version;
    let correlation_id = request.header.correlation_id;
    let reply = handlers::handle(broker, request, client).await;
    metrics::request_handled(api_key, version, started.elapsed());
    match reply {
        Ok(Some(body)) => respond(correlation_id, api_key, version, &body),
        Ok(None) => Outcome::Silent,
        Err(reason) => Outcome::Close(reason.to_string()),
    }
}

/// A frame on the private replication API key: its correlation id and body (`None` for any
/// other frame, which goes to the Kafka decoder).
fn replication_pull(frame: &Bytes) -> Option<(i16, i32, Bytes)> {
    let header = frame.get(..REPLICATION_HEADER_BYTES)?;
    let api_key = i16::from_be_bytes([header[0], header[1]]);
    if api_key != REPLICATION_API_KEY {
        return None;
    }
    let version = i16::from_be_bytes([header[2], header[3]]);
    let correlation_id = i32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    Some((
        version,
        correlation_id,
        frame.slice(REPLICATION_HEADER_BYTES..),
    ))
}

/// Serves a peer region's pull; an unknown version or a malformed body closes the connection.
async fn serve_replication(
    broker: &Arc<Broker>,
    (version, correlation_id, body): (i16, i32, Bytes),
) -> Outcome {
    if version != REPLICATION_API_VERSION {
        metrics::replication_refused("unsupported_version");
        return Outcome::Close(format!(
            "replication pull version {version} is not supported"
        ));
    }
    let with_header = |body: Vec<u8>| {
        let mut frame = Vec::with_capacity(8 + body.len());
        frame.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        frame.extend_from_slice(&correlation_id.to_be_bytes());
        frame.extend_from_slice(&body);
        Bytes::from(frame)
    };
    match replication::serve::serve(broker, &body).await {
        Ok(Served::Respond(body)) => Outcome::Respond(with_header(body)),
        Ok(Served::RespondAndClose(body, reason)) => {
            Outcome::RespondAndClose(with_header(body), reason)
        }
        Err(reason) => Outcome::Close(reason),
    }
}

fn respond(correlation_id: i32, api_key: ApiKey, version: i16, body: &ResponseKind) -> Outcome {
    match encode_response(correlation_id, api_key, version, body) {
        Ok(bytes) => Outcome::Respond(bytes),
        Err(error) => {
            tracing::error!(%error, "response encoding failed");
            Outcome::Close(error.to_string())
        }
    }
}
