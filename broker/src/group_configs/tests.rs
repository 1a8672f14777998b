use causeway_storage::Catalog;
use kafka_protocol::ResponseError;

use super::*;
use crate::security_state::SecurityStore;

const SESSION: &str = "consumer.session.timeout.ms";
const HEARTBEAT: &str = "consumer.heartbeat.interval.ms";

fn set(name: &str, value: &str) -> (String, Option<String>) {
    (name.to_string(), Some(value.to_string()))
}

fn store() -> (tempfile::TempDir, Catalog, SecurityStore) {
    let dir = tempfile::TempDir::new().expect("dir");
    let catalog = Catalog::open(dir.path()).expect("catalog");
    let security = SecurityStore::load(&catalog, 1, 60_000).expect("security state");
    (dir, catalog, security)
}

#[test]
fn a_group_without_configs_has_the_brokers_and_one_with_them_its_own_after_a_reload() {
    let (_dir, catalog, security) = store();
    let configs = GroupConfigs::load(&security, 3_000);
    assert_eq!(
        configs.describe("app"),
        vec![
            (GroupConfigKey::HeartbeatIntervalMs, 3_000, false),
            (GroupConfigKey::SessionTimeoutMs, 45_000, false),
        ]
    );
    configs
        .alter(
            &security,
            &catalog,
            "app",
            &[set(SESSION, "50000"), set(HEARTBEAT, "6000")],
            false,
        )
        .expect("in range");
    assert_eq!(
        configs.value("app", GroupConfigKey::SessionTimeoutMs),
        50_000
    );
    assert_eq!(
        configs.value("other", GroupConfigKey::SessionTimeoutMs),
        45_000
    );

    let reloaded = GroupConfigs::load(
        &SecurityStore::load(&catalog, 1, 60_000).expect("reload"),
        3_000,
    );
    assert_eq!(
        reloaded.describe("app"),
        vec![
            (GroupConfigKey::HeartbeatIntervalMs, 6_000, true),
            (GroupConfigKey::SessionTimeoutMs, 50_000, true),
        ]
    );
    configs
        .alter(
            &security,
            &catalog,
            "app",
            &[(SESSION.to_string(), None)],
            false,
        )
        .expect("a removal");
    assert_eq!(
        configs.describe("app")[1],
        (GroupConfigKey::SessionTimeoutMs, 45_000, false)
    );
}

#[test]
fn unknown_names_values_out_of_range_and_a_heartbeat_not_below_the_session_are_refused_whole() {
    let (_dir, catalog, security) = store();
    let configs = GroupConfigs::load(&security, 5_000);
    let refused = |changes: &[(String, Option<String>)]| {
        configs
            .alter(&security, &catalog, "app", changes, false)
            .expect_err("refused")
            .0
    };
    assert_eq!(
        refused(&[set("share.session.timeout.ms", "50000")]),
        ResponseError::InvalidConfig
    );
    assert_eq!(
        refused(&[set(SESSION, "1000")]),
        ResponseError::InvalidConfig
    );
    assert_eq!(
        refused(&[set(SESSION, "60001")]),
        ResponseError::InvalidConfig
    );
    assert_eq!(
        refused(&[set(SESSION, "fifty")]),
        ResponseError::InvalidConfig
    );
    assert_eq!(
        refused(&[set(HEARTBEAT, "4999")]),
        ResponseError::InvalidConfig
    );
    // The valid first change is not kept when the second is refused.
    assert_eq!(
        refused(&[set(HEARTBEAT, "6000"), set(SESSION, "1")]),
        ResponseError::InvalidConfig
    );
    assert_eq!(
        configs.describe("app")[0],
        (GroupConfigKey::HeartbeatIntervalMs, 5_000, false)
    );
    let (_dir2, catalog2, security2) = store();
    let low_default = GroupConfigs::load(&security2, 50_000);
    let refused = low_default
        .alter(
            &security2,
            &catalog2,
            "app",
            &[set(SESSION, "45000")],
            false,
        )
        .expect_err("the broker's heartbeat is not below 45 s");
    assert_eq!(refused.0, ResponseError::InvalidConfig);

    configs
        .alter(&security, &catalog, "app", &[set(SESSION, "50000")], true)
        .expect("valid");
    assert_eq!(
        configs.value("app", GroupConfigKey::SessionTimeoutMs),
        45_000,
        "validate only"
    );
}

#[test]
fn a_peers_change_is_followed_and_a_key_from_a_newer_version_is_skipped() {
    let (_dir, _catalog, security) = store();
    let configs = GroupConfigs::load(&security, 5_000);
    configs.apply("consumer.session.timeout.ms/orders/eu", Some(b"55000"));
    assert_eq!(
        configs.value("orders/eu", GroupConfigKey::SessionTimeoutMs),
        55_000
    );
    configs.apply("consumer.future.setting.ms/orders", Some(b"1"));
    configs.apply("consumer.session.timeout.ms/orders", Some(b"not a number"));
    assert_eq!(
        configs.value("orders", GroupConfigKey::SessionTimeoutMs),
        45_000
    );
    configs.apply("consumer.session.timeout.ms/orders/eu", None);
    assert_eq!(
        configs.value("orders/eu", GroupConfigKey::SessionTimeoutMs),
        45_000
    );
}
