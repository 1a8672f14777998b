//! The HTTP listener: Prometheus metrics, health probes, table rows and region status. Every
//! route is [`guarded`] by what it needs ([`crate::http_auth`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_io_timeout::TimeoutStream;

use crate::acl::{Operation, ResourceType};
use crate::broker::Broker;
use crate::http_auth::{guarded, Access};
use crate::replication::status::LinkState;
use crate::tls::Tls;

#[derive(Clone)]
struct HttpState {
    broker: Arc<Broker>,
    prometheus: PrometheusHandle,
}

/// Serves HTTP (over TLS when `tls` is given) until shutdown.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    broker: Arc<Broker>,
    prometheus: PrometheusHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/metrics", guarded(&broker, Access::Probe, get(metrics)))
        .route("/healthz", guarded(&broker, Access::Probe, get(healthz)))
        .route("/readyz", guarded(&broker, Access::Probe, get(readyz)))
        .route(
            "/v1/regions",
            guarded(&broker, Access::Cluster(Operation::Describe), get(regions)),
        )
        .route(
            "/v1/groups/{group}/positions",
            guarded(
                &broker,
                Access::Named(ResourceType::Group, Operation::Describe, "group"),
                get(group_positions),
            ),
        )
        .route(
            "/v1/topics/{topic}/partitions/{partition}/batches",
            guarded(
                &broker,
                Access::Named(ResourceType::Topic, Operation::Read, "topic"),
                get(partition_batches),
            ),
        )
        .with_state(HttpState {
            broker: broker.clone(),
            prometheus,
        })
        .merge(crate::tables::routes(broker, shutdown.clone()));
    let slots = Arc::new(Semaphore::new(HTTP_CONNECTIONS_MAX));
    let broker_tls = tls;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(&mut shutdown) => return,
        };
        let (stream, address) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            crate::metrics::connection_refused("http_connection_limit");
            continue;
        };
        // The client's address, for ACL bindings that name hosts.
        let app = app.clone().layer(Extension(ConnectInfo(address)));
        let tls = broker_tls.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let Some(tls) = tls else {
                return serve_connection(stream, app, shutdown, slot).await;
            };
            if let Some(stream) = tls.accept(stream, "http", &address.to_string()).await {
                serve_connection(stream, app, shutdown, slot).await;
            }
        });
    }
}

/// Resolves once shutdown is signalled.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Most HTTP connections served at once; more are closed on accept, so scrapers, probes and
/// table readers cannot exhaust the broker's tasks or file descriptors.
const HTTP_CONNECTIONS_MAX: usize = 1_024;
/// Longest a client may take to send a request's headers: a client that trickles them
/// (slowloris) is closed instead of holding a connection slot forever.
const HTTP_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a response write may wait for the client to read: a client that stops reading (a
/// stalled change feed, a frozen scraper) is closed instead of holding its buffers forever.
const HTTP_WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(15);

/// One HTTP/1 connection until it ends; on shutdown it finishes its request and closes.
async fn serve_connection<S>(
    stream: S,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
    slot: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut stream = TimeoutStream::new(stream);
    stream.set_write_timeout(Some(HTTP_WRITE_STALL_TIMEOUT));
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HTTP_HEADER_READ_TIMEOUT)
        .serve_connection(
            TokioIo::new(Box::pin(stream)),
            TowerToHyperService::new(app),
        );
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        _ = stopped(&mut shutdown) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if ended.as_ref().is_err_and(write_stalled) {
        crate::metrics::http_write_stalled();
    }
    drop(slot);
}

/// Whether a connection ended because a write waited longer than [`HTTP_WRITE_STALL_TIMEOUT`].
fn write_stalled(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    crate::metrics::collect_process();
    state.prometheus.run_upkeep();
    let mut body = state.prometheus.render();
    body.push_str(&crate::state_gauges::render(
        &state.broker.topics,
        &state.broker.groups,
        &state.broker.tables,
        state
            .broker
            .replication
            .enabled()
            .then(|| state.broker.positions()),
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// A line for `/readyz` when every peer refuses this region's pulls (a wrong secret or an
/// unknown region on both sides): nothing replicates in or out while the broker itself works.
fn degraded_replication(replication: &crate::replication::Replication) -> Option<String> {
    if !replication.enabled() {
        return None;
    }
    let refusals: Vec<String> = replication
        .peers
        .iter()
        .zip(&replication.links)
        .map(|(peer, link)| (peer, link.facts()))
        .filter(|(_, facts)| facts.state == LinkState::Refused)
        .map(|(peer, facts)| {
            format!(
                "{}: {}",
                peer.name,
                facts.last_error.unwrap_or_else(|| "refused".to_owned())
            )
        })
        .collect();
    (refusals.len() == replication.peers.len()).then(|| {
        format!(
            "replication degraded: every peer refuses this region ({})\n",
            refusals.join("; ")
        )
    })
}

/// This region's replication state (`docs/replication.md`, "Observing replication").
async fn regions(State(state): State<HttpState>) -> impl IntoResponse {
    let broker = state.broker.clone();
    match crate::blocking::MAINTENANCE
        .run(move || {
            crate::replication::status::report(
                &broker.topics,
                &broker.replication,
                broker.started_ms,
            )
        })
        .await
    {
        Ok(report) => axum::Json(report).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

async fn group_positions(
    State(state): State<HttpState>,
    axum::extract::Path(group): axum::extract::Path<String>,
) -> impl IntoResponse {
    let broker = state.broker.clone();
    match crate::blocking::READS
        .run(move || crate::positions::report(&broker, &group))
        .await
    {
        Ok(Ok(report)) => axum::Json(report).into_response(),
        Ok(Err(error)) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

/// Query of a batch listing.
#[derive(Debug, serde::Deserialize)]
struct BatchesQuery {
    #[serde(default)]
    from: i64,
    limit: Option<usize>,
}

async fn partition_batches(
    State(state): State<HttpState>,
    axum::extract::Path((topic, partition)): axum::extract::Path<(String, i32)>,
    axum::extract::Query(query): axum::extract::Query<BatchesQuery>,
) -> impl IntoResponse {
    let broker = state.broker.clone();
    let limit = query.limit.unwrap_or(crate::positions::BATCHES_LISTED_MAX);
    let listed = crate::blocking::READS
        .run(move || crate::positions::batches(&broker, &topic, partition, query.from, limit))
        .await;
    match listed {
        Ok(Ok(Some(batches))) => axum::Json(batches).into_response(),
        Ok(Ok(None)) => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": "no such topic or partition"})),
        )
            .into_response(),
        Ok(Err(error)) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready or not, then one line per damaged batch found on disk: the broker still serves, but an
/// operator looking at a region should see what its disk lost.
async fn readyz(State(state): State<HttpState>) -> (StatusCode, String) {
    readiness(&state.broker)
}

/// `/readyz`: 200 once started (503 before and while shutting down), with a line per damaged
/// batch range and one when replication is degraded, which fails the check too when
/// `--readyz-fails-on-degraded-replication` asks.
fn readiness(broker: &Broker) -> (StatusCode, String) {
    let (mut status, mut body) = if broker.is_ready() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string())
    };
    if let Some(degraded) = degraded_replication(&broker.replication) {
        body.push_str(&degraded);
        if broker.options.readyz_fails_on_degraded_replication {
            status = StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    for topic in broker.topics.all() {
        for partition in topic.partitions() {
            for range in partition.log().damaged_ranges() {
                body.push_str(&format!(
                    "damaged batch: {}-{} offsets {}..={}: {}\n",
                    topic.name,
                    partition.index(),
                    range.first,
                    range.last,
                    range.reason
                ));
            }
        }
    }
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_cli_from;
    use crate::replication::status::LinkState;

    fn region(dir: &std::path::Path, fail_on_degraded: &str) -> Broker {
        let dir = dir.to_str().expect("UTF-8 temp dir");
        let args = [
            "causeway",
            "--data-dir",
            dir,
            "--region",
            "eu",
            "--peer",
            "us@127.0.0.1:9",
            "--peer",
            "ap@127.0.0.1:9",
            "--replication-secret",
            "s",
            "--readyz-fails-on-degraded-replication",
            fail_on_degraded,
        ];
        let broker = Broker::open(parse_cli_from(args).expect("options").serve).expect("opens");
        broker.set_ready(true);
        broker
    }

    fn refuse(broker: &Broker, peer: usize) {
        broker.replication.links[peer].update(|f| {
            f.state = LinkState::Refused;
            f.last_error = Some("AuthenticationFailed".into());
        });
    }

    #[test]
    fn readyz_reports_degraded_replication_and_fails_on_it_when_asked() {
        let dir = tempfile::tempdir().expect("dir");
        let eu = region(dir.path(), "false");
        refuse(&eu, 0);
        let (status, body) = readiness(&eu);
        assert_eq!(status, StatusCode::OK);
        assert!(!body.contains("degraded"), "one link still works: {body}");
        refuse(&eu, 1);
        let (status, body) = readiness(&eu);
        assert_eq!(status, StatusCode::OK, "reported, not failed, by default");
        assert!(body.contains("replication degraded: every peer refuses this region (us: AuthenticationFailed; ap: AuthenticationFailed)"), "{body}");
        drop(eu);
        let strict = region(dir.path(), "true");
        refuse(&strict, 0);
        refuse(&strict, 1);
        assert_eq!(readiness(&strict).0, StatusCode::SERVICE_UNAVAILABLE);
    }
}
