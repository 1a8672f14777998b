//! Client quotas (KIP-13, KIP-55): byte rates of Produce and Fetch and the share of a thread
//! requests take, per user, client id or both, with `<default>` entries, resolved in Kafka's
//! order and measured as Kafka measures them (a rate over samples of one second), so a client
//! over its quota is told how long to back off (`throttle_time_ms`) and its connection is muted
//! that long (KIP-219). The quotas live in the replicated security state (`quota/...`,
//! [`crate::security_state`]); the sensors that measure clients are this region's own.
//! `docs/security.md`, "Quotas".

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use causeway_storage::Catalog;

use crate::security_state::{SecurityChange, SecurityStore, QUOTA_KEY_PREFIX};

#[cfg(test)]
mod tests;

/// The entity type naming a user (the principal's name after `User:`).
pub const USER: &str = "user";
/// The entity type naming a client id.
pub const CLIENT_ID: &str = "client-id";

/// Samples a rate is measured over (Kafka's `quota.window.num`).
pub const SAMPLES: usize = 11;
/// Length of one sample in milliseconds (Kafka's `quota.window.size.seconds`).
pub const SAMPLE_MS: u64 = 1_000;
/// Longest a client is throttled for at once: the whole measured window.
pub const MAX_THROTTLE_MS: u64 = SAMPLES as u64 * SAMPLE_MS;
/// Most sensors kept: past it, the least recently used one is dropped, so a client inventing
/// client ids cannot grow memory without bound.
pub const MAX_SENSORS: usize = 10_000;

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QuotaKey {
    /// Bytes of records produced a second.
    ProducerByteRate,
    /// Bytes of records fetched a second.
    ConsumerByteRate,
    /// Percent of one thread's time spent handling the client's requests (100: one thread).
    RequestPercentage,
}

impl QuotaKey {
    /// Every key, in a stable order.
    pub const ALL: [QuotaKey; 3] = [
        QuotaKey::ProducerByteRate,
        QuotaKey::ConsumerByteRate,
        QuotaKey::RequestPercentage,
    ];

    /// Kafka's name of the key.
    pub fn name(self) -> &'static str {
        match self {
            QuotaKey::ProducerByteRate => "producer_byte_rate",
            QuotaKey::ConsumerByteRate => "consumer_byte_rate",
            QuotaKey::RequestPercentage => "request_percentage",
        }
    }

    /// The key Kafka names `name`.
    pub fn from_name(name: &str) -> Option<QuotaKey> {
        QuotaKey::ALL.into_iter().find(|key| key.name() == name)
    }

    /// The `kind` label of its metrics.
    pub fn kind(self) -> &'static str {
        match self {
            QuotaKey::ProducerByteRate => "produce",
            QuotaKey::ConsumerByteRate => "fetch",
            QuotaKey::RequestPercentage => "request",
        }
    }

    /// Checks a value to set: finite and positive; byte rates are whole bytes.
    pub fn validate(self, value: f64) -> Result<(), String> {
        if !value.is_finite() || value <= 0.0 {
            return Err(format!("{} must be positive, not {value}", self.name()));
        }
        if self != QuotaKey::RequestPercentage && value.fract() != 0.0 {
            return Err(format!(
                "{} is a whole number of bytes, not {value}",
                self.name()
            ));
        }
        Ok(())
    }
}

/// One component of an entity: a name, or the default (`<default>`, a null name on the wire).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Name {
    /// Applies to each user (or client id) without a more specific entry.
    Default,
    /// This user (or client id).
    Named(String),
}

impl Name {
    /// The wire form: `None` for the default.
    pub fn as_wire(&self) -> Option<&str> {
        match self {
            Name::Default => None,
            Name::Named(name) => Some(name),
        }
    }

    /// From the wire form.
    pub fn from_wire(name: Option<&str>) -> Name {
        name.map_or(Name::Default, |n| Name::Named(n.to_string()))
    }
}

/// A quota entity: a user, a client id, or both (Kafka's `/config/users/<u>/clients/<c>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entity {
    /// The user component, if any.
    pub user: Option<Name>,
    /// The client id component, if any.
    pub client_id: Option<Name>,
}

impl Entity {
    /// Builds an entity from `(type, name)` components as a request names them.
    pub fn from_components<'a>(
        components: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<Entity, String> {
        let mut entity = Entity {
            user: None,
            client_id: None,
        };
        for (entity_type, name) in components {
            let slot = match entity_type {
                USER => &mut entity.user,
                CLIENT_ID => &mut entity.client_id,
                "ip" => return Err("ip quotas are not supported".into()),
                other => return Err(format!("unknown entity type {other:?}")),
            };
            if slot.is_some() {
                return Err(format!("entity type {entity_type} given twice"));
            }
            *slot = Some(Name::from_wire(name));
        }
        if entity.user.is_none() && entity.client_id.is_none() {
            return Err("an entity names a user, a client id or both".into());
        }
        Ok(entity)
    }

    /// Its `(type, name)` components, user first.
    pub fn components(&self) -> Vec<(&'static str, Option<&str>)> {
        let mut out = Vec::new();
        if let Some(user) = &self.user {
            out.push((USER, user.as_wire()));
        }
        if let Some(client) = &self.client_id {
            out.push((CLIENT_ID, client.as_wire()));
        }
        out
    }

    /// The security state's key encoding: `user=<name>,client-id=<name>`, names escaped so that
    /// `/`, `,`, `=`, `<`, `>` and `%` never appear in them, the default as `<default>`.
    pub fn encode(&self) -> String {
        self.components()
            .into_iter()
            .map(|(t, name)| match name {
                None => format!("{t}=<default>"),
                Some(name) => format!("{t}={}", escape(name)),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The entity [`Entity::encode`] made.
    pub fn decode(encoded: &str) -> Result<Entity, String> {
        let mut components = Vec::new();
        for part in encoded.split(',') {
            let (t, name) = part
                .split_once('=')
                .ok_or_else(|| format!("entity component {part:?} has no '='"))?;
            let name = match name {
                "<default>" => None,
                escaped => Some(unescape(escaped)?),
            };
            components.push((t.to_string(), name));
        }
        Entity::from_components(components.iter().map(|(t, n)| (t.as_str(), n.as_deref())))
    }
}

fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '%' | '/' | ',' | '=' | '<' | '>') {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

fn unescape(escaped: &str) -> Result<String, String> {
    let mut out = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            let hex: String = chars.by_ref().take(2).collect();
            let byte = u8::from_str_radix(&hex, 16)
                .map_err(|_| format!("bad escape %{hex} in {escaped:?}"))?;
            out.push(char::from(byte));
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// The security state key of one quota value.
pub fn state_key(entity: &Entity, key: QuotaKey) -> String {
    format!("{QUOTA_KEY_PREFIX}{}/{}", entity.encode(), key.name())
}

/// The entity and key of a security state key (after `quota/`).
pub fn parse_state_key(rest: &str) -> Result<(Entity, QuotaKey), String> {
    let (entity, key) = rest
        .rsplit_once('/')
        .ok_or_else(|| format!("quota key {rest:?} has no '/'"))?;
    let key = QuotaKey::from_name(key).ok_or_else(|| format!("unknown quota key {key:?}"))?;
    Ok((Entity::decode(entity)?, key))
}

/// A stored value: the f64's bits, big-endian.
pub fn encode_value(value: f64) -> Vec<u8> {
    value.to_bits().to_be_bytes().to_vec()
}

/// The value [`encode_value`] stored.
pub fn decode_value(bytes: &[u8]) -> Result<f64, String> {
    let bits: [u8; 8] = bytes
        .try_into()
        .map_err(|_| format!("a quota value has 8 bytes, not {}", bytes.len()))?;
    Ok(f64::from_bits(u64::from_be_bytes(bits)))
}

/// Every configured quota: entity, then key, to value.
pub type QuotaTable = BTreeMap<Entity, BTreeMap<QuotaKey, f64>>;

/// Which sensor measures a client against the quota it falls under: Kafka's metric tags, the
/// matched entity's components with a default replaced by the client's own name, so a default
/// quota is shared by nobody (each user or client id gets its own) and a named one by every
/// connection of that user or client id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SensorKey {
    /// The quota measured.
    pub key: QuotaKey,
    /// The user tag (empty when the entity has no user component).
    pub user: String,
    /// The client id tag (empty when the entity has no client id component).
    pub client_id: String,
}

/// The quota `key` that applies to `user` with `client_id`, in Kafka's order (first found):
/// `users/<user>/clients/<client>`, `users/<user>/clients/<default>`, `users/<user>`,
/// `users/<default>/clients/<client>`, `users/<default>/clients/<default>`, `users/<default>`,
/// `clients/<client>`, `clients/<default>`; with the sensor it is measured by.
pub fn resolve(
    table: &QuotaTable,
    user: &str,
    client_id: &str,
    key: QuotaKey,
) -> Option<(f64, SensorKey)> {
    let named = |s: &str| Some(Name::Named(s.to_string()));
    let order = [
        (named(user), named(client_id)),
        (named(user), Some(Name::Default)),
        (named(user), None),
        (Some(Name::Default), named(client_id)),
        (Some(Name::Default), Some(Name::Default)),
        (Some(Name::Default), None),
        (None, named(client_id)),
        (None, Some(Name::Default)),
    ];
    order.into_iter().find_map(|(u, c)| {
        let has_user = u.is_some();
        let has_client = c.is_some();
        let entity = Entity {
            user: u,
            client_id: c,
        };
        let value = *table.get(&entity)?.get(&key)?;
        let sensor = SensorKey {
            key,
            user: if has_user {
                user.to_string()
            } else {
                String::new()
            },
            client_id: if has_client {
                client_id.to_string()
            } else {
                String::new()
            },
        };
        Some((value, sensor))
    })
}

/// How a DescribeClientQuotas component matches an entity's component of its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// This name exactly.
    Exact(String),
    /// The default entry.
    Default,
    /// Any name, the default included.
    Specified,
}

/// A DescribeClientQuotas filter: per entity type how it must match; with `strict`, entities
/// with a component of a type the filter does not name are left out.
#[derive(Debug, Clone)]
pub struct Filter {
    /// The user component's match, if the filter names users.
    pub user: Option<Match>,
    /// The client id component's match, if the filter names client ids.
    pub client_id: Option<Match>,
    /// Whether only entities made of the named types match.
    pub strict: bool,
}

impl Filter {
    /// Whether `entity` passes.
    pub fn matches(&self, entity: &Entity) -> bool {
        let one = |m: &Option<Match>, name: &Option<Name>| match (m, name) {
            (Some(_), None) => false,
            (Some(Match::Specified), Some(_)) => true,
            (Some(Match::Default), Some(name)) => *name == Name::Default,
            (Some(Match::Exact(want)), Some(name)) => *name == Name::Named(want.clone()),
            (None, None) => true,
            (None, Some(_)) => !self.strict,
        };
        one(&self.user, &entity.user) && one(&self.client_id, &entity.client_id)
    }
}

/// A rate measured like Kafka's `Rate` over [`SAMPLES`] samples of [`SAMPLE_MS`]: the values
/// recorded in the live samples over the time since the oldest began, at least one sample long.
#[derive(Debug, Clone)]
pub struct RateSensor {
    /// `(start_ms, total)` of each sample; a sample older than the window counts as empty.
    samples: [(u64, f64); SAMPLES],
    current: usize,
    /// When a value was last recorded (for eviction).
    pub last_used_ms: u64,
}

impl RateSensor {
    /// A sensor whose first sample begins at `now_ms`.
    pub fn new(now_ms: u64) -> RateSensor {
        RateSensor {
            samples: [(now_ms, 0.0); SAMPLES],
            current: 0,
            last_used_ms: now_ms,
        }
    }

    /// Adds `value` at `now_ms`.
    pub fn record(&mut self, value: f64, now_ms: u64) {
        let (start, _) = self.samples[self.current];
        if now_ms >= start.saturating_add(SAMPLE_MS) {
            self.current = (self.current + 1) % SAMPLES;
            self.samples[self.current] = (now_ms, 0.0);
        }
        self.samples[self.current].1 += value;
        self.last_used_ms = now_ms;
    }

    /// The rate (per second) at `now_ms`.
    pub fn rate(&self, now_ms: u64) -> f64 {
        let (total, window) = self.measure(now_ms);
        total * 1_000.0 / window as f64
    }

    /// The live total and the window (ms) it was recorded over.
    fn measure(&self, now_ms: u64) -> (f64, u64) {
        let horizon = now_ms.saturating_sub(MAX_THROTTLE_MS);
        let live = self.samples.iter().filter(|(start, _)| *start >= horizon);
        let total: f64 = live.clone().map(|(_, v)| v).sum();
        let oldest = live.map(|(start, _)| *start).min().unwrap_or(now_ms);
        (total, now_ms.saturating_sub(oldest).max(SAMPLE_MS))
    }

    /// How long (ms) the client must wait for the rate to fall back to `quota`: Kafka's
    /// `(rate - quota) / quota * window`, at most [`MAX_THROTTLE_MS`]; 0 within the quota.
    pub fn throttle_ms(&self, quota: f64, now_ms: u64) -> u64 {
        let (total, window) = self.measure(now_ms);
        let rate = total * 1_000.0 / window as f64;
        if quota <= 0.0 || rate <= quota {
            return 0;
        }
        let ms = (rate - quota) / quota * window as f64;
        (ms.ceil() as u64).min(MAX_THROTTLE_MS)
    }
}

/// The sensors of the clients measured, bounded: idle ones (nothing recorded for a whole
/// window: they would measure nothing) are dropped, and past [`MAX_SENSORS`] the least recently
/// used one.
#[derive(Default)]
pub struct Sensors {
    sensors: HashMap<SensorKey, RateSensor>,
    last_sweep_ms: u64,
}

impl Sensors {
    /// Records `value` on the sensor `key` and answers the throttle time against `quota`.
    pub fn record(&mut self, key: &SensorKey, value: f64, quota: f64, now_ms: u64) -> u64 {
        if now_ms >= self.last_sweep_ms.saturating_add(SAMPLE_MS) {
            self.sweep(now_ms);
        }
        if !self.sensors.contains_key(key) && self.sensors.len() >= MAX_SENSORS {
            if let Some(oldest) = self
                .sensors
                .iter()
                .min_by_key(|(_, s)| s.last_used_ms)
                .map(|(k, _)| k.clone())
            {
                self.sensors.remove(&oldest);
            }
        }
        let sensor = self
            .sensors
            .entry(key.clone())
            .or_insert_with(|| RateSensor::new(now_ms));
        sensor.record(value, now_ms);
        sensor.throttle_ms(quota, now_ms)
    }

    /// Drops sensors idle for a whole window.
    pub fn sweep(&mut self, now_ms: u64) {
        self.last_sweep_ms = now_ms;
        self.sensors
            .retain(|_, s| now_ms < s.last_used_ms.saturating_add(MAX_THROTTLE_MS));
    }

    /// How many sensors are kept.
    pub fn len(&self) -> usize {
        self.sensors.len()
    }

    /// Whether no sensor is kept.
    pub fn is_empty(&self) -> bool {
        self.sensors.is_empty()
    }
}

/// What one request used, to be measured against the quotas of its client.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Bytes of records produced.
    pub produced_bytes: u64,
    /// Bytes of records fetched.
    pub fetched_bytes: u64,
    /// Time a worker spent handling the request, in nanoseconds (`None`: exempt).
    pub handling_ns: Option<u64>,
}

/// The quotas (a view of the replicated security state) and the sensors measuring clients.
pub struct Quotas {
    table: RwLock<QuotaTable>,
    /// Whether any quota is set: when none is, requests are not measured at all.
    any: AtomicBool,
    sensors: Mutex<Sensors>,
    /// Held while a change is written, so changes land in the state and in memory in order.
    changing: Mutex<()>,
}

impl Quotas {
    /// Loads every quota of the security state; one whose key or value does not decode is
    /// logged and skipped (it can only come from a newer version).
    pub fn load(security: &SecurityStore) -> Quotas {
        let quotas = Quotas {
            table: RwLock::new(QuotaTable::new()),
            any: AtomicBool::new(false),
            sensors: Mutex::new(Sensors::default()),
            changing: Mutex::new(()),
        };
        for (rest, value) in security.values_under(QUOTA_KEY_PREFIX) {
            quotas.apply(&rest, Some(&value));
        }
        quotas
    }

    /// Follows a change (`rest` is the key after `quota/`; `None`: removed).
    pub fn apply(&self, rest: &str, value: Option<&[u8]>) {
        let parsed = parse_state_key(rest)
            .and_then(|(entity, key)| Ok((entity, key, value.map(decode_value).transpose()?)));
        let (entity, key, value) = match parsed {
            Ok(parsed) => parsed,
            Err(why) => {
                tracing::warn!(key = rest, %why, "ignoring a quota");
                return;
            }
        };
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        match value {
            Some(value) => {
                table.entry(entity).or_default().insert(key, value);
            }
            None => {
                if let Some(values) = table.get_mut(&entity) {
                    values.remove(&key);
                    if values.is_empty() {
                        table.remove(&entity);
                    }
                }
            }
        }
        self.any.store(!table.is_empty(), Ordering::Release);
    }

    /// Writes changes (`None`: remove) durably, then applies them.
    pub fn alter(
        &self,
        security: &SecurityStore,
        catalog: &Catalog,
        changes: &[(Entity, QuotaKey, Option<f64>)],
    ) -> Result<(), String> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let changes: Vec<SecurityChange> = changes
            .iter()
            .map(|(entity, key, value)| (state_key(entity, *key), value.map(encode_value)))
            .collect();
        security.write(catalog, &changes)?;
        for (key, value) in &changes {
            if let Some(rest) = key.strip_prefix(QUOTA_KEY_PREFIX) {
                self.apply(rest, value.as_deref());
            }
        }
        Ok(())
    }

    /// The entities the filter matches, with their values.
    pub fn describe(&self, filter: &Filter) -> Vec<(Entity, Vec<(QuotaKey, f64)>)> {
        self.table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(entity, _)| filter.matches(entity))
            .map(|(entity, values)| {
                (
                    entity.clone(),
                    values.iter().map(|(k, v)| (*k, *v)).collect(),
                )
            })
            .collect()
    }

    /// Whether any quota is set.
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Records what a request of `principal` (`User:<name>`) with `client_id` used and answers,
    /// per quota it exceeds, the throttle time in ms (the largest is the one to apply).
    pub fn record(
        &self,
        principal: &str,
        client_id: &str,
        usage: Usage,
        now_ms: u64,
    ) -> Vec<(QuotaKey, u64)> {
        if !self.any() {
            return Vec::new();
        }
        let user = principal.strip_prefix("User:").unwrap_or(principal);
        let measured = [
            (QuotaKey::ProducerByteRate, usage.produced_bytes as f64),
            (QuotaKey::ConsumerByteRate, usage.fetched_bytes as f64),
            (
                QuotaKey::RequestPercentage,
                // Percent-seconds: 1 ms of handling is 0.1 percent of a thread for a second.
                usage.handling_ns.map_or(0.0, |ns| ns as f64 / 1e7),
            ),
        ];
        let wanted: Vec<(QuotaKey, f64, f64, SensorKey)> = {
            let table = self.table.read().unwrap_or_else(|e| e.into_inner());
            measured
                .into_iter()
                .filter(|(key, value)| {
                    *value > 0.0
                        || (*key == QuotaKey::RequestPercentage && usage.handling_ns.is_some())
                })
                .filter_map(|(key, value)| {
                    let (quota, sensor) = resolve(&table, user, client_id, key)?;
                    Some((key, value, quota, sensor))
                })
                .collect()
        };
        if wanted.is_empty() {
            return Vec::new();
        }
        let mut sensors = self.sensors.lock().unwrap_or_else(|e| e.into_inner());
        wanted
            .into_iter()
            .map(|(key, value, quota, sensor)| (key, sensors.record(&sensor, value, quota, now_ms)))
            .filter(|(_, ms)| *ms > 0)
            .collect()
    }

    /// How many sensors are kept (for tests and metrics).
    pub fn sensor_count(&self) -> usize {
        self.sensors.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Runs `future` and answers, with its output, the time spent inside its polls: the time it
/// occupied a worker thread, not the time it waited (a Fetch's long poll, an fsync).
pub async fn busy_time<F: std::future::Future>(future: F) -> (F::Output, std::time::Duration) {
    let mut future = std::pin::pin!(future);
    let mut busy = std::time::Duration::ZERO;
    let output = std::future::poll_fn(|cx| {
        let started = std::time::Instant::now();
        let poll = future.as_mut().poll(cx);
        busy += started.elapsed();
        poll
    })
    .await;
    (output, busy)
}
