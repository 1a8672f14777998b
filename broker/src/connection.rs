//! One client connection: read length-prefixed frames (refusing oversized ones before buffering
//! them), decode, dispatch, and write responses in request order. Requests on one connection are
//! handled one at a time, as Kafka does; clients pipeline by sending several before reading.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use causeway_protocol::frame::{check_frame, FrameCheck, FRAME_PREFIX_BYTES};
use causeway_protocol::request::{decode_request, RequestError};
use causeway_protocol::response::api_versions_body;
use causeway_protocol::spliced::encode_response_pieces;
use causeway_replication::wire::{split_peer_request, PeerHeader, PeerRequest, WireError};
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::config::SecurityProtocol;
use crate::connection_limits::RequestBudget;
use crate::handlers::sasl::SaslSession;
use crate::replication::serve::Served;
use crate::tls::Tls;
use crate::{handlers, metrics, replication};

/// Most bytes read from a socket at once (and taken from the request budget at once).
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Bytes of buffered requests that count against the shared budget: each connection buffers
/// its first chunk free, so small requests (metadata, fetch, heartbeats) of well-behaved
/// clients are never queued behind other clients' large frames.
fn budgeted(buffered: usize) -> usize {
    buffered.saturating_sub(READ_CHUNK_BYTES)
}

/// How long a connection admitted into the reserve for peer regions may take to send its first
/// request: a peer's link pulls as soon as it connects, and an idle connection must not hold a
/// reserve slot for the whole idle timeout (64 idle connections would lock every peer out).
const PEER_RESERVE_FIRST_REQUEST: Duration = Duration::from_secs(5);

/// What to do after one frame.
enum Outcome {
    /// Send these bytes.
    Respond(Bytes),
    /// Send these pieces in order (a Fetch response with its record sets by reference).
    RespondPieces(Vec<Bytes>),
    /// Send nothing (Produce with acks=0).
    Silent,
    /// Close the connection for this reason.
    Close(String),
    /// Send these bytes, then close the connection for this reason.
    RespondAndClose(Bytes, String),
}

/// What the listener gives each connection besides its socket.
pub struct Admission {
    /// Budget for bytes of requests read but not yet answered, shared by every connection.
    pub budget: Arc<RequestBudget>,
    /// Close the connection after this long without a byte from the client
    /// (`connections.max.idle.ms`).
    pub idle_max: Duration,
    /// Admitted into the reserve kept for peer regions: the first request must be a
    /// replication pull, or the connection is closed.
    pub peers_only: bool,
}

/// What a connection knows of the listener that accepted it.
pub struct ListenerContext {
    /// How its clients authenticate.
    pub protocol: SecurityProtocol,
    /// What its clients are told to connect to.
    pub advertised: Arc<(String, i32)>,
    /// The TLS configuration, on a TLS listener.
    pub tls: Option<Arc<Tls>>,
}

/// Serves one connection until the client closes it, it breaks the protocol, idles too long, or
/// shutdown; on a TLS listener, after the handshake.
pub async fn serve(
    stream: TcpStream,
    listener: Arc<ListenerContext>,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
    admission: Admission,
) {
    let address = stream.peer_addr().ok();
    // Logged by address, without Rust's `Some(...)` around it.
    let peer = address.map_or_else(|| "unknown".to_owned(), |addr| addr.to_string());
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "set_nodelay failed");
    }
    let mut client = handlers::ClientContext {
        host: address.map(|a| format!("/{}", a.ip())).unwrap_or_default(),
        principal: crate::acl::ANONYMOUS.to_string(),
        advertised: listener.advertised.clone(),
        certificate_name: None,
    };
    let Some(tls) = &listener.tls else {
        let (reader, writer) = stream.into_split();
        let connection = Connection {
            peer,
            client,
            protocol: listener.protocol,
        };
        return serve_frames(reader, writer, connection, broker, shutdown, admission).await;
    };
    // rustls reads the socket 4 KiB at a time; a buffer under it turns sixteen reads (and
    // wakeups) into one for large produce requests (`docs/benchmarks.md`, TLS).
    let buffered_socket = tokio::io::BufReader::with_capacity(READ_CHUNK_BYTES, stream);
    let Some(stream) = tls.accept(buffered_socket, "kafka", &peer).await else {
        return;
    };
    if let Some(certificate) = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
    {
        if let Some(principal) = crate::tls::principal_of(certificate) {
            client.principal = principal;
        }
        client.certificate_name = crate::tls::common_name(certificate);
    }
    let (reader, writer) = tokio::io::split(stream);
    let connection = Connection {
        peer,
        client,
        protocol: listener.protocol,
    };
    serve_frames(reader, writer, connection, broker, shutdown, admission).await;
}

/// Who is on the other end of a connection and how it authenticates.
struct Connection {
    /// The client's address, for logs.
    peer: String,
    client: handlers::ClientContext,
    protocol: SecurityProtocol,
}

/// Reads, serves and answers frames until the connection ends.
async fn serve_frames<R, W>(
    mut reader: R,
    writer: W,
    connection: Connection,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
    admission: Admission,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Connection {
        peer,
        mut client,
        protocol,
    } = connection;
    let mut writer = BufWriter::with_capacity(READ_CHUNK_BYTES, writer);
    let mut buffered = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let frame_bytes_max = broker.options.socket_request_max_bytes as usize;
    let mut held = admission.budget.holder();
    let mut peers_only = admission.peers_only;
    let mut sasl = SaslSession::new(protocol, broker.options.connections_max_reauth_ms);
    loop {
        match check_frame(&buffered, frame_bytes_max) {
            Err(error) => {
                tracing::warn!(%peer, %error, "closing connection");
                metrics::connection_closed_for_bad_input();
                return;
            }
            Ok(FrameCheck::Complete { body_bytes }) => {
                let mut frame = buffered.split_to(FRAME_PREFIX_BYTES + body_bytes);
                let body = frame.split_off(FRAME_PREFIX_BYTES).freeze();
                if std::mem::take(&mut peers_only) && replication_pull(&body).is_none() {
                    tracing::warn!(
                        %peer,
                        "closing connection: over the connection limit and not a peer region"
                    );
                    metrics::connection_refused("connection_limit");
                    return;
                }
                let mut throttle_ms = 0;
                let outcome =
                    process(&broker, body, &mut client, &mut sasl, &mut throttle_ms).await;
                held.release_to(budgeted(buffered.len()));
                if !send(&mut writer, &peer, outcome).await {
                    return;
                }
                let another_is_buffered = matches!(
                    check_frame(&buffered, frame_bytes_max),
                    Ok(FrameCheck::Complete { .. })
                );
                if (throttle_ms > 0 || !another_is_buffered) && writer.flush().await.is_err() {
                    return;
                }
                if *shutdown.borrow() {
                    return;
                }
                if throttle_ms > 0 {
                    // KIP-219: the client was over its quota; read nothing more from it until
                    // the throttle time it was told has passed.
                    let muted = tokio::time::sleep(Duration::from_millis(throttle_ms));
                    tokio::select! {
                        () = muted => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
            Ok(FrameCheck::Incomplete { needed }) => {
                // Read what the frame still lacks, a chunk at a time and only once the shared
                // budget covers it: a length prefix alone reserves nothing.
                let mut want = needed
                    .map_or(READ_CHUNK_BYTES, |total| total - buffered.len())
                    .clamp(1, READ_CHUNK_BYTES);
                if budgeted(buffered.len() + want) > 0 {
                    // Past the first chunk: a replication pull is judged by its front first.
                    match judge_pull_front(&broker, &buffered, client.certificate_name.as_deref()) {
                        PullFront::ReadOn => {}
                        PullFront::FillFirstChunk => want = READ_CHUNK_BYTES - buffered.len(),
                        PullFront::Stop(outcome) => {
                            send(&mut writer, &peer, outcome).await;
                            return;
                        }
                    }
                }
                if held.hold(budgeted(buffered.len() + want)).await.is_err() {
                    tracing::warn!(
                        %peer,
                        "closing connection: buffered requests over queued-max-request-bytes"
                    );
                    metrics::connection_refused("request_budget");
                    return;
                }
                // Room for the whole frame at once (address space, not memory: pages are
                // touched only as budgeted bytes arrive), so growing never copies.
                buffered.reserve(needed.map_or(want, |total| total - buffered.len()));
                let mut limited = (&mut reader).take(want as u64);
                let read = limited.read_buf(&mut buffered);
                let idle_max = if peers_only {
                    admission.idle_max.min(PEER_RESERVE_FIRST_REQUEST)
                } else {
                    admission.idle_max
                };
                tokio::select! {
                    read = tokio::time::timeout(idle_max, read) => match read {
                        Err(_) => {
                            tracing::debug!(%peer, "closing idle connection");
                            metrics::connection_refused("idle");
                            return;
                        }
                        Ok(Ok(0) | Err(_)) => return,
                        Ok(Ok(_)) => {}
                    },
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

/// Writes what `outcome` says; returns whether the connection stays open.
async fn send<W: AsyncWriteExt + Unpin>(writer: &mut W, peer: &str, outcome: Outcome) -> bool {
    match outcome {
        Outcome::Respond(bytes) => writer.write_all(&bytes).await.is_ok(),
        Outcome::RespondPieces(pieces) => {
            for piece in pieces {
                if writer.write_all(&piece).await.is_err() {
                    return false;
                }
            }
            true
        }
        Outcome::Silent => true,
        Outcome::RespondAndClose(bytes, reason) => {
            tracing::warn!(%peer, %reason, "closing connection");
            let _ = writer.write_all(&bytes).await;
            let _ = writer.flush().await;
            false
        }
        Outcome::Close(reason) => {
            tracing::warn!(%peer, %reason, "closing connection");
            metrics::connection_closed_for_bad_input();
            let _ = writer.flush().await;
            false
        }
    }
}

/// What the front of a frame still arriving says, before more of it is read.
enum PullFront {
    /// Not a replication pull, or one admitted so far: read on.
    ReadOn,
    /// A pull whose credentials have not all arrived: read the rest of the first chunk (free of
    /// the request budget), no further.
    FillFirstChunk,
    /// A pull refused from its front: answer this and close, reading no more of it.
    Stop(Outcome),
}

/// Judges a replication pull from the front of its frame (`buffered`, length prefix included):
/// on a broker without peers, with an unknown version, or with credentials that fail, the rest
/// of the frame (up to `--socket-request-max-bytes`) is never read. Credentials that do not fit
/// in the first chunk are malformed: a peer's secret is short.
fn judge_pull_front(broker: &Broker, buffered: &[u8], certificate: Option<&str>) -> PullFront {
    let Some((header, body)) = buffered
        .get(FRAME_PREFIX_BYTES..)
        .and_then(split_peer_request)
    else {
        return PullFront::ReadOn;
    };
    if let Some(refusal) = refuse_pull_header(broker, &header) {
        return PullFront::Stop(refusal);
    }
    match replication::serve::admit(broker, header.kind, body, certificate) {
        Ok(None) => PullFront::ReadOn,
        Ok(Some(refusal)) => PullFront::Stop(served(header.correlation_id, refusal)),
        Err(WireError::Truncated) if buffered.len() < READ_CHUNK_BYTES => PullFront::FillFirstChunk,
        Err(error) => {
            metrics::replication_refused("malformed_request");
            PullFront::Stop(Outcome::Close(format!("replication pull: {error}")))
        }
    }
}

/// A pull or seed this broker refuses by its header alone: it has no peers, or the version is
/// unknown.
fn refuse_pull_header(broker: &Broker, header: &PeerHeader) -> Option<Outcome> {
    if !broker.replication.enabled() {
        metrics::replication_refused("not_configured");
        return Some(Outcome::Close(format!(
            "replication {:?} on a broker without peers",
            header.kind
        )));
    }
    if header.version != header.kind.version() {
        metrics::replication_refused("unsupported_version");
        return Some(Outcome::Close(format!(
            "replication {:?} version {} is not supported",
            header.kind, header.version
        )));
    }
    None
}

/// The outcome of a served (or refused) pull, framed with its correlation id.
fn served(correlation_id: i32, served: Served) -> Outcome {
    match served {
        Served::Respond(body) => Outcome::RespondPieces(body.into_response_frame(correlation_id)),
        Served::RespondAndClose(body, reason) => Outcome::RespondAndClose(
            body.into_response_frame(correlation_id).concat().into(),
            reason,
        ),
    }
}

/// Decodes and handles one frame body. On a SASL listener, requests other than authentication
/// close the connection until the client has authenticated (peer regions' pulls carry their own
/// secret and are judged by it).
async fn process(
    broker: &Arc<Broker>,
    body: Bytes,
    client: &mut handlers::ClientContext,
    sasl: &mut SaslSession,
    throttle_ms: &mut u64,
) -> Outcome {
    let started = Instant::now();
    if let Some(pull) = replication_pull(&body) {
        return serve_replication(broker, pull, client.certificate_name.as_deref()).await;
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
            return respond(correlation_id, ApiKey::ApiVersions, 0, reply);
        }
        Err(error) => return Outcome::Close(error.to_string()),
    };
    let api_key = request.api_key;
    let version = request.version;
    let correlation_id = request.header.correlation_id;
    let client_id = request.header.client_id.clone();
    let produced = handlers::quotas::produced_bytes(&request.body);
    if !sasl.admits(api_key, Instant::now()) {
        metrics::connection_refused("unauthenticated");
        return Outcome::Close(format!("{api_key:?} before SASL authentication"));
    }
    let ((mut reply, close), busy) = crate::quota::busy_time(async {
        match request.body {
            RequestKind::SaslHandshake(r) => {
                let answer = sasl.handshake(broker, &r);
                (
                    Ok(Some(ResponseKind::SaslHandshake(answer.response))),
                    answer.close,
                )
            }
            RequestKind::SaslAuthenticate(r) => {
                let answer = sasl.authenticate(broker, r, version).await;
                if let Some(user) = sasl.principal() {
                    client.principal = format!("User:{user}");
                }
                (
                    Ok(Some(ResponseKind::SaslAuthenticate(answer.response))),
                    answer.close,
                )
            }
            _ => (handlers::handle(broker, request, client).await, None),
        }
    })
    .await;
    if let Ok(response) = &mut reply {
        *throttle_ms = handlers::quotas::enforce(
            broker,
            &client.principal,
            client_id.as_ref().map_or("", |id| id.as_str()),
            api_key,
            produced,
            response.as_mut(),
            busy,
        );
    }
    metrics::request_handled(api_key, version, started.elapsed());
    match (reply, close) {
        (Ok(Some(body)), None) => respond(correlation_id, api_key, version, body),
        (Ok(Some(body)), Some(reason)) => match respond(correlation_id, api_key, version, body) {
            Outcome::Respond(bytes) => Outcome::RespondAndClose(bytes, reason),
            Outcome::RespondPieces(pieces) => {
                Outcome::RespondAndClose(pieces.concat().into(), reason)
            }
            other => other,
        },
        (Ok(None), _) => Outcome::Silent,
        (Err(reason), _) => Outcome::Close(reason.to_string()),
    }
}

/// A frame on a private replication API key: its header and body (`None` for any other frame,
/// which goes to the Kafka decoder).
fn replication_pull(frame: &Bytes) -> Option<(PeerHeader, Bytes)> {
    let (header, body) = split_peer_request(frame)?;
    Some((header, frame.slice_ref(body)))
}

/// Serves a peer region's pull or seed request; an unknown version or a malformed body closes
/// the connection.
async fn serve_replication(
    broker: &Arc<Broker>,
    (header, body): (PeerHeader, Bytes),
    certificate: Option<&str>,
) -> Outcome {
    if let Some(refusal) = refuse_pull_header(broker, &header) {
        return refusal;
    }
    let answer = match header.kind {
        PeerRequest::Pull => replication::serve::serve(broker, &body, certificate).await,
        PeerRequest::Seed => replication::serve::serve_seed(broker, &body, certificate).await,
    };
    match answer {
        Ok(refusal_or_answer) => served(header.correlation_id, refusal_or_answer),
        Err(reason) => Outcome::Close(reason),
    }
}

fn respond(correlation_id: i32, api_key: ApiKey, version: i16, body: ResponseKind) -> Outcome {
    match encode_response_pieces(correlation_id, api_key, version, body) {
        Ok(mut pieces) if pieces.len() == 1 => match pieces.pop() {
            Some(bytes) => Outcome::Respond(bytes),
            None => Outcome::Silent,
        },
        Ok(pieces) => Outcome::RespondPieces(pieces),
        Err(error) => {
            tracing::error!(%error, "response encoding failed");
            Outcome::Close(error.to_string())
        }
    }
}
