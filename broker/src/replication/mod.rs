//! Active-active replication between regions (DESIGN.md section 4), wired to the broker: every
//! partition has a [`Replica`] (the pure core of `causeway_replication::delivery` over its log),
//! every peer a [`link`] that pulls from it over the Kafka port, and [`serve`] answers peers'
//! pulls. See `docs/replication.md` for the protocol and the guarantees.

pub mod deleted_for_peer;
pub mod detour;
pub mod dial;
pub mod link;
pub mod log;
#[cfg(test)]
mod mesh_sim;
pub mod seed;
pub mod serve;
pub mod status;
pub mod syncer;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::bail;
use causeway_replication::delivery::{PartitionReplica, ReplicaConfig};
use causeway_replication::region::region_id;
use tokio::sync::watch;

use crate::config::BrokerOptions;
use status::LinkStatus;

/// One partition's replica: the causal-delivery core over the partition's log.
pub type Replica = PartitionReplica<log::ReplicaLog>;

/// Most batches held per origin in a partition's pending queue (see `docs/replication.md`).
const PENDING_PER_ORIGIN_MAX: usize = 1024;

/// A peer region as configured with `--peer NAME@HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Region name.
    pub name: String,
    /// Region id derived from the name (the same in every region).
    pub id: u32,
    /// Its Kafka listener.
    pub addr: String,
}

/// This region's replication settings and the state its links, its pull server and the produce
/// path share.
pub struct Replication {
    /// This region's name.
    pub region: String,
    /// This region's id.
    pub region_id: u32,
    /// The configured peers, in configuration order.
    pub peers: Vec<Peer>,
    secret: Vec<u8>,
    /// Whether pulls must come over mutual TLS with a certificate naming the region
    /// (`--replication-tls`).
    certificates_required: bool,
    /// How far ahead of local time a remote stamp may be.
    pub hlc_skew_ms_max: u64,
    /// After how long without contact a peer is reported stale and left out of the stable cut.
    pub stale_after: Duration,
    /// One per peer, same order as `peers`.
    pub links: Vec<LinkStatus>,
    /// Bumped when batches become servable here (a local fsync, a remote apply, a catalog
    /// change): wakes pulls that wait for news of any origin.
    data_progress: watch::Sender<u64>,
    /// Bumped when this region's own batches become servable (or the catalog changes): wakes
    /// pulls that want only this region's batches, the usual case in a healthy mesh, so applies
    /// of other regions' batches do not wake every peer's idle pull.
    own_progress: watch::Sender<u64>,
    /// Pulls parked until this region has something new to serve.
    pulls_parked: std::sync::atomic::AtomicUsize,
    /// Asks the syncer to fsync now rather than at its next tick.
    sync_wanted: tokio::sync::Notify,
    /// Bumped when a peer reports its clocks: wakes produce requests waiting for regions.
    peer_progress: watch::Sender<u64>,
    /// Peers already reported stale, so the warning is logged once per episode.
    pub stale_reported: Mutex<BTreeSet<u32>>,
    /// Which way each peer is reported behind (see `syncer.rs`), so each change is logged once.
    pub behind_reported: Mutex<BTreeSet<(u32, status::Behind)>>,
    /// Origins asked of every peer because a peer served a damaged copy.
    pub detours: detour::Detours,
    /// Peers asking for batches deleted here, logged at a bounded rate.
    pub deleted_for_peer: deleted_for_peer::DeletedForPeer,
    /// How far copying this region's data from a peer got (`--seed-from`).
    pub seed: seed::SeedProgress,
}

impl Replication {
    /// Reads the region and peers from the options; refuses duplicate or clashing ids and peers
    /// without a shared secret.
    pub fn from_options(options: &BrokerOptions) -> anyhow::Result<Replication> {
        let own_id = region_id(&options.region);
        let mut ids = BTreeSet::from([own_id]);
        let mut peers = Vec::new();
        for spec in &options.peers {
            let Some((name, addr)) = spec.split_once('@') else {
                bail!("--peer {spec:?} is not NAME@HOST:PORT");
            };
            let id = region_id(name);
            if !ids.insert(id) {
                bail!("--peer {name:?}: its region id {id} clashes with this region or another peer; rename one of them");
            }
            peers.push(Peer {
                name: name.to_string(),
                id,
                addr: addr.to_string(),
            });
        }
        let secret = options.replication_secret.clone().unwrap_or_default();
        if !peers.is_empty() && secret.is_empty() && !options.replication_tls {
            bail!("--replication-secret is required when peers are configured without --replication-tls");
        }
        Ok(Replication {
            region: options.region.clone(),
            region_id: own_id,
            links: peers.iter().map(|_| LinkStatus::default()).collect(),
            peers,
            secret: secret.into_bytes(),
            certificates_required: options.replication_tls,
            hlc_skew_ms_max: options.max_clock_skew_ms,
            stale_after: Duration::from_millis(options.region_stale_after_ms),
            data_progress: watch::channel(0).0,
            own_progress: watch::channel(0).0,
            pulls_parked: std::sync::atomic::AtomicUsize::new(0),
            sync_wanted: tokio::sync::Notify::new(),
            peer_progress: watch::channel(0).0,
            stale_reported: Mutex::new(BTreeSet::new()),
            behind_reported: Mutex::new(BTreeSet::new()),
            detours: detour::Detours::default(),
            deleted_for_peer: deleted_for_peer::DeletedForPeer::default(),
            seed: seed::SeedProgress::default(),
        })
    }

    /// The name of a region id (the id as text if no region of that id is configured).
    pub fn region_name(&self, id: u32) -> String {
        if id == self.region_id {
            return self.region.clone();
        }
        self.peers
            .iter()
            .find(|p| p.id == id)
            .map_or_else(|| id.to_string(), |p| p.name.clone())
    }

    /// Whether any peer is configured.
    pub fn enabled(&self) -> bool {
        !self.peers.is_empty()
    }

    /// The core's settings for a partition replica.
    pub fn replica_config(&self) -> ReplicaConfig {
        let mut regions = vec![self.region_id];
        regions.extend(self.peers.iter().map(|p| p.id));
        ReplicaConfig {
            region: self.region_id,
            regions,
            pending_per_origin_max: PENDING_PER_ORIGIN_MAX,
            hlc_skew_ms_max: self.hlc_skew_ms_max,
        }
    }

    /// The peer with this id and its link status.
    pub fn peer(&self, id: u32) -> Option<(&Peer, &LinkStatus)> {
        self.peers
            .iter()
            .position(|p| p.id == id)
            .map(|i| (&self.peers[i], &self.links[i]))
    }

    /// Whether a pull claiming to come from peer `claimed` may be served, given the secret it
    /// carries and the common name of the connection's verified client certificate: a
    /// certificate naming another region is refused whatever the secret; with
    /// `--replication-tls` a certificate naming the claimed region is required, and the secret
    /// is checked only if one is configured; otherwise the secret decides.
    pub fn admits(&self, claimed: &Peer, secret: &[u8], certificate: Option<&str>) -> bool {
        match (certificate, self.certificates_required) {
            (Some(name), _) if name != claimed.name => false,
            (None, true) => false,
            (Some(_), true) => self.secret.is_empty() || self.authenticates(secret),
            (_, false) => self.authenticates(secret),
        }
    }

    /// Whether `secret` is the shared secret (compared in constant time).
    pub fn authenticates(&self, secret: &[u8]) -> bool {
        if self.secret.is_empty() || secret.len() != self.secret.len() {
            return false;
        }
        secret
            .iter()
            .zip(&self.secret)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }

    /// The shared secret, sent with this region's pulls.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Announces that batches became servable here; `own` when some are this region's own
    /// (or the catalog changed).
    pub fn data_progressed(&self, own: bool) {
        self.data_progress.send_modify(|g| *g = g.wrapping_add(1));
        if own {
            self.own_progress.send_modify(|g| *g = g.wrapping_add(1));
        }
    }

    /// Announces that this region appended batches of its own that wait for the background
    /// fsync before they may be served: when a peer's pull is parked waiting for news, the
    /// syncer runs at once instead of at its next tick, so an idle mesh replicates a write after
    /// one fsync rather than a tick and an fsync. Under load pulls rarely park, and syncing
    /// keeps its cadence.
    pub fn own_batches_appended(&self) {
        if self.pulls_parked.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            self.sync_wanted.notify_one();
        }
    }

    /// Waits until an append asks for an early fsync ([`Replication::own_batches_appended`]).
    pub async fn sync_wanted(&self) {
        self.sync_wanted.notified().await;
    }

    /// Counts a pull parked waiting for news until the returned guard drops.
    pub fn park_pull(&self) -> ParkedPull<'_> {
        self.pulls_parked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ParkedPull(&self.pulls_parked)
    }

    /// Waits for news of servable batches: of this region's own only, or of any origin.
    pub fn watch_data(&self, own_only: bool) -> watch::Receiver<u64> {
        if own_only {
            self.own_progress.subscribe()
        } else {
            self.data_progress.subscribe()
        }
    }

    /// Announces that a peer reported its clocks.
    pub fn peer_progressed(&self) {
        self.peer_progress.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Waits for peers' clock reports.
    pub fn watch_peers(&self) -> watch::Receiver<u64> {
        self.peer_progress.subscribe()
    }
}

/// A pull parked waiting for news ([`Replication::park_pull`]); uncounted when dropped.
pub struct ParkedPull<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for ParkedPull<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_cli_from;

    fn options(args: &[&str]) -> BrokerOptions {
        let mut all = vec!["causeway"];
        all.extend_from_slice(args);
        parse_cli_from(all).expect("options").serve
    }

    /// Region `eu` with the one peer `us`, over plaintext with the secret `s`.
    fn eu_peering_us_with_secret_s() -> Replication {
        Replication::from_options(&options(&[
            "--region",
            "eu",
            "--peer",
            "us@127.0.0.1:9093",
            "--replication-secret",
            "s",
        ]))
        .expect("replication")
    }

    #[test]
    fn peers_get_name_derived_ids_and_need_a_secret() {
        assert!(Replication::from_options(&options(&["--peer", "us@127.0.0.1:9093"])).is_err());
        let replication = eu_peering_us_with_secret_s();
        assert_eq!(replication.peers[0].id, region_id("us"));
        assert_eq!(replication.region_id, region_id("eu"));
        assert!(replication.authenticates(b"s"));
        assert!(!replication.authenticates(b"t"));
        assert!(!replication.authenticates(b""));
        assert!(Replication::from_options(&options(&[
            "--region",
            "eu",
            "--peer",
            "eu@127.0.0.1:9093",
            "--replication-secret",
            "s",
        ]))
        .is_err());
    }

    #[test]
    fn a_certificate_must_name_the_region_a_pull_claims() {
        let tls = [
            "--region",
            "eu",
            "--peer",
            "us@127.0.0.1:9093",
            "--ssl-certificate-file",
            "eu.pem",
            "--ssl-private-key-file",
            "eu.key",
            "--ssl-client-ca-file",
            "ca.pem",
            "--replication-tls",
            "true",
        ];
        let replication = Replication::from_options(&options(&tls)).expect("no secret needed");
        let us = &replication.peers[0];
        assert!(replication.admits(us, b"", Some("us")));
        assert!(
            !replication.admits(us, b"", Some("eu")),
            "another region's certificate"
        );
        assert!(
            !replication.admits(us, b"", Some("alice")),
            "a client's certificate"
        );
        assert!(!replication.admits(us, b"", None), "no certificate");

        let mut with_secret = tls.to_vec();
        with_secret.extend(["--replication-secret", "s"]);
        let replication = Replication::from_options(&options(&with_secret)).expect("replication");
        let us = &replication.peers[0];
        assert!(replication.admits(us, b"s", Some("us")));
        assert!(
            !replication.admits(us, b"t", Some("us")),
            "a configured secret is checked"
        );

        let plain = eu_peering_us_with_secret_s();
        let us = &plain.peers[0];
        assert!(plain.admits(us, b"s", None));
        assert!(!plain.admits(us, b"t", None));
        assert!(
            !plain.admits(us, b"s", Some("eu")),
            "a certificate naming another region"
        );
    }
}
