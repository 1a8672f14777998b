//! The HTTP listener: Prometheus metrics, health probes and table rows (region status joins it
//! with replication).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::Broker;

#[derive(Clone)]
struct HttpState {
    broker: Arc<Broker>,
    prometheus: PrometheusHandle,
}

/// Serves HTTP until shutdown.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    prometheus: PrometheusHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(HttpState {
            broker: broker.clone(),
            prometheus,
        })
        .merge(crate::tables::routes(broker, shutdown.clone()));
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(%error, "HTTP listener failed");
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    crate::metrics::publish_partition_gauges(&state.broker.topics);
    crate::metrics::publish_group_gauges(&state.broker.topics, &state.broker.groups);
    state.prometheus.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.prometheus.render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if state.broker.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
