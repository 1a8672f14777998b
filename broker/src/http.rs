//! The HTTP listener: Prometheus metrics, health probes, table rows and region status.

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
        .route("/v1/regions", get(regions))
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

/// This region's replication state (`docs/replication.md`, "Observing replication").
async fn regions(State(state): State<HttpState>) -> impl IntoResponse {
    let broker = state.broker.clone();
    match tokio::task::spawn_blocking(move || crate::replication::status::report(&broker)).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
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
