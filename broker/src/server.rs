//! Listeners and the broker's lifetime: open storage, bind the Kafka and HTTP listeners, run
//! background maintenance, and on SIGTERM or Ctrl-C stop accepting, let in-flight requests
//! finish, stop every background task and wait for the blocking work they started (all within
//! `--shutdown-timeout-ms`), then fsync and close every log so the next start needs no recovery
//! scan.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::config::BrokerOptions;
use crate::connection::ListenerContext;
use crate::connection_limits::{PerAddressCount, RequestBudget};
use crate::tls::Tls;
use crate::{
    connection, flusher, groups, http, listeners, maintenance, metrics, replication, scrub, tables,
    transactions,
};

/// Connections admitted beyond `--max-connections` or `--max-connections-per-ip` for peer
/// regions only (their first request must be a replication pull), so a flood of clients cannot
/// cut replication.
const PEER_RESERVE_CONNECTIONS: usize = 64;
/// Longest a connection waits for request budget before it is closed.
const REQUEST_BUDGET_WAIT: Duration = Duration::from_secs(30);

/// Runs the broker until a shutdown signal, then shuts it down cleanly.
pub async fn run(options: BrokerOptions) -> anyhow::Result<()> {
    let prometheus = metrics::install()?;
    tracing::info!(data_dir = %options.data_dir.display(), "opening storage");
    let open_options = options.clone();
    let broker = crate::blocking::MAINTENANCE
        .run(move || Broker::open(open_options))
        .await
        .context("storage recovery task")?
        .context("opening storage")?;
    let broker = Arc::new(broker);
    metrics::publish_identity(&broker.replication.region, broker.replication.region_id);
    tracing::info!(topics = broker.topics.all().len(), "storage recovered");

    let tls = broker.tls.clone();
    let kafka = bind_kafka_listeners(&options, tls.as_ref()).await?;
    let http_listener = TcpListener::bind(options.http_listen)
        .await
        .with_context(|| format!("binding the HTTP listener on {}", options.http_listen))?;
    tracing::info!(addr = %options.http_listen, "HTTP listener up");

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Every background task, so shutdown can wait for each before it closes the logs.
    let mut background = JoinSet::new();
    let http_tls = tls.clone().filter(|_| options.http_tls);
    background.spawn(http::serve(
        http_listener,
        http_tls,
        broker.clone(),
        prometheus,
        shutdown_rx.clone(),
    ));
    replication::seed::run(&broker).await?;
    background.spawn(maintenance::run(broker.clone(), shutdown_rx.clone()));
    background.spawn(flusher::run(broker.clone(), shutdown_rx.clone()));
    background.spawn(scrub::run(broker.clone(), shutdown_rx.clone()));
    background.spawn(groups::run(broker.clone(), shutdown_rx.clone()));
    background.spawn(transactions::run(broker.clone(), shutdown_rx.clone()));
    background.spawn(tables::run(broker.clone(), shutdown_rx.clone()));
    if broker.replication.enabled() {
        background.spawn(replication::syncer::run(
            broker.clone(),
            shutdown_rx.clone(),
        ));
        for index in 0..broker.replication.peers.len() {
            background.spawn(replication::link::run(
                broker.clone(),
                index,
                shutdown_rx.clone(),
            ));
        }
    }
    background.spawn(reload_on_hangup(broker.clone(), tls, shutdown_rx.clone()));
    broker.set_ready(true);
    tracing::info!("ready");

    let mut connections = accept_until_shutdown(&kafka, &broker, &shutdown_rx).await;
    tracing::info!("shutting down: no new connections");
    broker.set_ready(false);
    drop(kafka);
    let _ = shutdown_tx.send(true);
    let grace = Duration::from_millis(options.shutdown_timeout_ms);
    let deadline = tokio::time::Instant::now() + grace;
    if !join_by(&mut connections, deadline).await {
        tracing::warn!(
            ?grace,
            "in-flight requests did not finish in time; closed them"
        );
    }
    // Links, the materializer, the cleaner, maintenance, group and transaction timers, HTTP:
    // each stops at the signal.
    if !join_by(&mut background, deadline).await {
        tracing::warn!(
            ?grace,
            "background tasks did not stop in time; aborted them"
        );
    }
    // Whatever blocking work the tasks had started ends too (a task aborted mid-append leaves
    // its append running), so nothing writes to a log being closed.
    let idle_deadline = tokio::time::Instant::now() + grace;
    if tokio::time::timeout_at(idle_deadline, crate::blocking::all_idle())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "blocking work still running; waiting for it before closing the logs"
        );
        crate::blocking::all_idle().await;
    }
    let closing = broker.clone();
    crate::blocking::MAINTENANCE
        .run(move || closing.topics.close_all())
        .await
        .context("closing logs")?;
    tracing::info!("shutdown complete");
    Ok(())
}

/// Waits for every task of `tasks` until `deadline`, then aborts those still running and waits
/// for them to end; returns whether all ended in time. When it returns, no task of the set runs.
async fn join_by(tasks: &mut JoinSet<()>, deadline: tokio::time::Instant) -> bool {
    let all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout_at(deadline, all).await.is_ok() {
        return true;
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    false
}

/// A bound Kafka listener and what its connections need to know of it.
struct KafkaListener {
    socket: TcpListener,
    context: Arc<ListenerContext>,
}

/// Binds every Kafka listener (`--kafka-listen` and each `--listener`).
async fn bind_kafka_listeners(
    options: &BrokerOptions,
    tls: Option<&Arc<Tls>>,
) -> anyhow::Result<Vec<KafkaListener>> {
    let mut bound = Vec::new();
    for listener in listeners::listeners(options)? {
        let socket = TcpListener::bind(listener.bind).await.with_context(|| {
            format!(
                "binding the Kafka listener {} on {}",
                listener.name, listener.bind
            )
        })?;
        let tls = match (listener.protocol.uses_tls(), tls) {
            (false, _) => None,
            (true, Some(tls)) => Some(tls.clone()),
            (true, None) => anyhow::bail!(
                "the TLS listener {} needs --ssl-certificate-file and --ssl-private-key-file",
                listener.name
            ),
        };
        tracing::info!(
            name = %listener.name,
            protocol = ?listener.protocol,
            addr = %listener.bind,
            advertised = ?listener.advertised,
            "Kafka listener up"
        );
        bound.push(KafkaListener {
            socket,
            context: Arc::new(ListenerContext {
                protocol: listener.protocol,
                advertised: Arc::new(listener.advertised),
                tls,
            }),
        });
    }
    Ok(bound)
}

/// On each SIGHUP, reads again the TLS certificate, key and client authorities (with `tls`) and
/// the HTTP bearer tokens file (with `--http-bearer-tokens-file`); a reload that fails leaves
/// what was loaded before in use and says why.
async fn reload_on_hangup(
    broker: Arc<Broker>,
    tls: Option<Arc<Tls>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP: certificates and tokens reload only on restart");
            return;
        }
    };
    loop {
        tokio::select! {
            received = hangups.recv() => if received.is_none() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        match broker.http_auth.reload_tokens() {
            Ok(None) => {}
            Ok(Some(count)) => tracing::info!(tokens = count, "HTTP bearer tokens reloaded"),
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "HTTP bearer tokens reload failed; the previous tokens stay in use"
            ),
        }
        let Some(tls) = &tls else { continue };
        let loading = tls.clone();
        match crate::blocking::MAINTENANCE
            .run(move || loading.reload())
            .await
        {
            Ok(Ok(())) => {
                tracing::info!("TLS certificate and key reloaded");
                metrics::tls_reload(true);
            }
            Ok(Err(error)) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "TLS reload failed; the previous certificate stays in use"
                );
                metrics::tls_reload(false);
            }
            Err(error) => {
                tracing::warn!(%error, "TLS reload task failed");
                metrics::tls_reload(false);
            }
        }
    }
}

/// The next connection on any of `listeners`, with the listener it came in on.
async fn accept_any(
    listeners: &[KafkaListener],
) -> (
    &KafkaListener,
    std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)>,
) {
    std::future::poll_fn(|cx| {
        for listener in listeners {
            if let std::task::Poll::Ready(accepted) = listener.socket.poll_accept(cx) {
                return std::task::Poll::Ready((listener, accepted));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Accepts Kafka connections until the shutdown signal; returns the connections still open, so
/// shutdown can wait for them (and stop them) before it closes the logs.
async fn accept_until_shutdown(
    listeners: &[KafkaListener],
    broker: &Arc<Broker>,
    shutdown: &watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut connections = JoinSet::new();
    let options = &broker.options;
    let clients = Arc::new(Semaphore::new(options.max_connections as usize));
    let peers = Arc::new(Semaphore::new(PEER_RESERVE_CONNECTIONS));
    let per_address = PerAddressCount::new(options.max_connections_per_ip);
    let budget = RequestBudget::new(
        usize::try_from(options.queued_max_request_bytes).unwrap_or(usize::MAX),
        REQUEST_BUDGET_WAIT,
    );
    let idle_max = Duration::from_millis(options.connections_max_idle_ms);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        let (listener, accepted) = tokio::select! {
            accepted = accept_any(listeners) => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = &mut signal => return connections,
        };
        let (stream, address) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // An address past `--max-connections-per-ip`, or any past `--max-connections`, may
        // still take a slot of the peer reserve: a peer region on the same address as a flood
        // (or on a shared NAT address) keeps replicating, and a reserve connection whose first
        // request is not a pull is closed within seconds.
        let slot = per_address.admit(address.ip());
        let client_permit = match &slot {
            Some(_) => clients.clone().try_acquire_owned().ok(),
            None => None,
        };
        let (permit, peers_only) = match client_permit {
            Some(permit) => (permit, false),
            None => match peers.clone().try_acquire_owned() {
                Ok(permit) => (permit, true),
                Err(_) if slot.is_none() => {
                    tracing::debug!(%address, "refused: max-connections-per-ip reached");
                    metrics::connection_refused("per_ip_limit");
                    continue;
                }
                Err(_) => {
                    tracing::warn!(%address, "refused: max-connections reached");
                    metrics::connection_refused("connection_limit");
                    continue;
                }
            },
        };
        let admission = connection::Admission {
            budget: budget.clone(),
            idle_max,
            peers_only,
        };
        let broker = broker.clone();
        let shutdown = shutdown.clone();
        let listener = listener.context.clone();
        connections.spawn(async move {
            let _gauge = metrics::ConnectionGauge::open();
            connection::serve(stream, listener, broker, shutdown, admission).await;
            drop((permit, slot));
        });
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection stuck past the grace period (a produce waiting on peers, a slow client) is
    /// stopped and gone before shutdown goes on to close the logs.
    #[tokio::test]
    async fn tasks_still_running_at_the_deadline_are_aborted_and_joined() {
        let mut tasks = JoinSet::new();
        let (ended_tx, mut ended_rx) = tokio::sync::mpsc::channel::<()>(1);
        tasks.spawn(async move {
            let _ended = ended_tx; // dropped when the task ends, aborted or not
            std::future::pending::<()>().await;
        });
        tasks.spawn(async {});
        let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
        assert!(
            !join_by(&mut tasks, deadline).await,
            "the stuck task was not reported"
        );
        assert!(tasks.is_empty());
        assert!(ended_rx.recv().await.is_none(), "the stuck task still runs");

        tasks.spawn(async {});
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        assert!(join_by(&mut tasks, deadline).await);
    }
}
