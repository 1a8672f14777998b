//! Group configs (Kafka 4, KIP-848): a consumer group may set its own
//! `consumer.session.timeout.ms` and `consumer.heartbeat.interval.ms` for members of the consumer
//! protocol, in place of the broker's. Set with IncrementalAlterConfigs on a GROUP resource, read
//! with DescribeConfigs. They live in the replicated security state (`group-config/<name>/<group>`)
//! like quotas, so a group fails over to another region with its settings; this is the request
//! path's view of them.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::{Mutex, RwLock};

use causeway_storage::Catalog;
use kafka_protocol::ResponseError;

use crate::groups::consumer::SESSION_TIMEOUT_MS;
use crate::security_state::{SecurityChange, SecurityStore, GROUP_CONFIG_KEY_PREFIX};

/// Most groups that may carry configs of their own: the replicated state they live in travels
/// whole between regions, so it is kept small.
pub const GROUPS_WITH_CONFIGS_MAX: usize = 10_000;

/// The broker's session timeout of consumer-protocol members.
const DEFAULT_SESSION_TIMEOUT_MS: i32 = SESSION_TIMEOUT_MS as i32;

/// A config a group can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupConfigKey {
    /// How long a consumer-protocol member may go without a heartbeat.
    SessionTimeoutMs,
    /// How often consumer-protocol members are told to heartbeat.
    HeartbeatIntervalMs,
}

impl GroupConfigKey {
    /// Every key, in the order DescribeConfigs lists them.
    pub const ALL: [GroupConfigKey; 2] = [
        GroupConfigKey::HeartbeatIntervalMs,
        GroupConfigKey::SessionTimeoutMs,
    ];

    /// Kafka's name of the config.
    pub fn name(self) -> &'static str {
        match self {
            GroupConfigKey::SessionTimeoutMs => "consumer.session.timeout.ms",
            GroupConfigKey::HeartbeatIntervalMs => "consumer.heartbeat.interval.ms",
        }
    }

    fn from_name(name: &str) -> Option<GroupConfigKey> {
        GroupConfigKey::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The values a group may set: Kafka's `group.consumer.min/max.*` defaults.
    fn allowed(self) -> RangeInclusive<i32> {
        match self {
            GroupConfigKey::SessionTimeoutMs => 45_000..=60_000,
            GroupConfigKey::HeartbeatIntervalMs => 5_000..=15_000,
        }
    }
}

/// A refused change: the Kafka error and why.
pub type Refusal = (ResponseError, String);

/// Every group's configs, as the security state holds them.
pub struct GroupConfigs {
    table: RwLock<BTreeMap<String, BTreeMap<GroupConfigKey, i32>>>,
    /// Held while a change is checked and written, so two changes cannot both pass the checks
    /// against the same old values.
    changing: Mutex<()>,
    /// The broker's heartbeat interval (`--group-consumer-heartbeat-interval-ms`).
    default_heartbeat_interval_ms: i32,
}

impl GroupConfigs {
    /// Loads every group config of the security state.
    pub fn load(security: &SecurityStore, default_heartbeat_interval_ms: i32) -> GroupConfigs {
        let configs = GroupConfigs {
            table: RwLock::new(BTreeMap::new()),
            changing: Mutex::new(()),
            default_heartbeat_interval_ms,
        };
        for (rest, value) in security.values_under(GROUP_CONFIG_KEY_PREFIX) {
            configs.apply(&rest, Some(&value));
        }
        configs
    }

    /// Follows a change (`rest` is the key after `group-config/`; `None`: removed). One that
    /// does not parse can only come from a newer version: logged and skipped.
    pub fn apply(&self, rest: &str, value: Option<&[u8]>) {
        let parsed = rest.split_once('/').and_then(|(name, group)| {
            let key = GroupConfigKey::from_name(name)?;
            let value = match value {
                Some(bytes) => Some(std::str::from_utf8(bytes).ok()?.parse::<i32>().ok()?),
                None => None,
            };
            Some((group, key, value))
        });
        let Some((group, key, value)) = parsed else {
            tracing::warn!(key = rest, "ignoring a group config that does not parse");
            return;
        };
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        match value {
            Some(value) => {
                table
                    .entry(group.to_string())
                    .or_default()
                    .insert(key, value);
            }
            None => {
                if let Some(values) = table.get_mut(group) {
                    values.remove(&key);
                    if values.is_empty() {
                        table.remove(group);
                    }
                }
            }
        }
    }

    fn get(&self, group: &str, key: GroupConfigKey) -> Option<i32> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table
            .get(group)
            .and_then(|values| values.get(&key))
            .copied()
    }

    fn default_of(&self, key: GroupConfigKey) -> i32 {
        match key {
            GroupConfigKey::SessionTimeoutMs => DEFAULT_SESSION_TIMEOUT_MS,
            GroupConfigKey::HeartbeatIntervalMs => self.default_heartbeat_interval_ms,
        }
    }

    /// The group's value of `key`: its own, else the broker's.
    pub fn value(&self, group: &str, key: GroupConfigKey) -> i32 {
        self.get(group, key).unwrap_or_else(|| self.default_of(key))
    }

    /// Every config of `group` with its value and whether the group sets it (any group id,
    /// known or not, as Kafka describes them).
    pub fn describe(&self, group: &str) -> Vec<(GroupConfigKey, i32, bool)> {
        GroupConfigKey::ALL
            .into_iter()
            .map(|key| match self.get(group, key) {
                Some(value) => (key, value, true),
                None => (key, self.default_of(key), false),
            })
            .collect()
    }

    /// Sets (`Some`) or removes (`None`) configs of `group`, all or none: each must be a known
    /// config with a value in its range, and the heartbeat interval must stay below the session
    /// timeout. With `validate_only` nothing is written.
    pub fn alter(
        &self,
        security: &SecurityStore,
        catalog: &Catalog,
        group: &str,
        changes: &[(String, Option<String>)],
        validate_only: bool,
    ) -> Result<(), Refusal> {
        let invalid = |why: String| (ResponseError::InvalidConfig, why);
        if group.is_empty() {
            return Err((
                ResponseError::InvalidRequest,
                "a group id is required".into(),
            ));
        }
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let mut values: BTreeMap<GroupConfigKey, i32> = {
            let table = self.table.read().unwrap_or_else(|e| e.into_inner());
            table.get(group).cloned().unwrap_or_default()
        };
        let had_configs = !values.is_empty();
        let mut writes: Vec<SecurityChange> = Vec::new();
        for (name, value) in changes {
            let key = GroupConfigKey::from_name(name)
                .ok_or_else(|| invalid(format!("unknown group config {name}")))?;
            let state_key = format!("{GROUP_CONFIG_KEY_PREFIX}{}/{group}", key.name());
            match value {
                Some(text) => {
                    let parsed = text
                        .parse::<i32>()
                        .ok()
                        .filter(|v| key.allowed().contains(v))
                        .ok_or_else(|| {
                            let range = key.allowed();
                            invalid(format!(
                                "{name} must be a number of milliseconds from {} to {}, not {text:?}",
                                range.start(),
                                range.end()
                            ))
                        })?;
                    values.insert(key, parsed);
                    writes.push((state_key, Some(parsed.to_string().into_bytes())));
                }
                None => {
                    values.remove(&key);
                    writes.push((state_key, None));
                }
            }
        }
        let effective = |key| {
            values
                .get(&key)
                .copied()
                .unwrap_or_else(|| self.default_of(key))
        };
        let (heartbeat, session) = (
            effective(GroupConfigKey::HeartbeatIntervalMs),
            effective(GroupConfigKey::SessionTimeoutMs),
        );
        if heartbeat >= session {
            return Err(invalid(format!(
                "consumer.heartbeat.interval.ms ({heartbeat}) must be below \
                 consumer.session.timeout.ms ({session})"
            )));
        }
        if !had_configs
            && !values.is_empty()
            && self.groups_with_configs() >= GROUPS_WITH_CONFIGS_MAX
        {
            return Err((
                ResponseError::PolicyViolation,
                format!("at most {GROUPS_WITH_CONFIGS_MAX} groups may carry configs of their own"),
            ));
        }
        if validate_only || writes.is_empty() {
            return Ok(());
        }
        security
            .write(catalog, &writes)
            .map_err(|why| (ResponseError::KafkaStorageError, why))?;
        for (key, value) in &writes {
            if let Some(rest) = key.strip_prefix(GROUP_CONFIG_KEY_PREFIX) {
                self.apply(rest, value.as_deref());
            }
        }
        Ok(())
    }

    fn groups_with_configs(&self) -> usize {
        self.table.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests;
