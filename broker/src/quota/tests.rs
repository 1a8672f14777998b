use super::*;

fn entity(user: Option<Name>, client_id: Option<Name>) -> Entity {
    Entity { user, client_id }
}

fn named(name: &str) -> Option<Name> {
    Some(Name::Named(name.to_string()))
}

const D: Option<Name> = Some(Name::Default);

#[test]
fn quota_precedence_is_kafkas_most_specific_first() {
    // The eight levels, most specific first; removing them one by one must walk down the list.
    let levels = [
        entity(named("alice"), named("app")),
        entity(named("alice"), D),
        entity(named("alice"), None),
        entity(D, named("app")),
        entity(D, D),
        entity(D, None),
        entity(None, named("app")),
        entity(None, D),
    ];
    let mut table = QuotaTable::new();
    for (i, level) in levels.iter().enumerate() {
        table
            .entry(level.clone())
            .or_default()
            .insert(QuotaKey::ProducerByteRate, (i + 1) as f64);
    }
    for (i, level) in levels.iter().enumerate() {
        let (value, sensor) =
            resolve(&table, "alice", "app", QuotaKey::ProducerByteRate).expect("a quota applies");
        assert_eq!(value, (i + 1) as f64, "level {i}: {level:?}");
        assert_eq!(sensor.user.is_empty(), level.user.is_none());
        assert_eq!(sensor.client_id.is_empty(), level.client_id.is_none());
        table.remove(level);
    }
    assert!(resolve(&table, "alice", "app", QuotaKey::ProducerByteRate).is_none());
}

#[test]
fn quota_keys_resolve_independently_and_defaults_are_per_client() {
    let mut table = QuotaTable::new();
    table
        .entry(entity(None, D))
        .or_default()
        .insert(QuotaKey::ProducerByteRate, 100.0);
    table
        .entry(entity(named("bob"), None))
        .or_default()
        .insert(QuotaKey::ConsumerByteRate, 50.0);
    let (_, a) = resolve(&table, "bob", "a", QuotaKey::ProducerByteRate).expect("default");
    let (_, b) = resolve(&table, "bob", "b", QuotaKey::ProducerByteRate).expect("default");
    assert_ne!(a, b, "each client id gets its own sensor under the default");
    let (value, c) = resolve(&table, "bob", "a", QuotaKey::ConsumerByteRate).expect("user");
    assert_eq!(value, 50.0);
    assert_eq!((c.user.as_str(), c.client_id.as_str()), ("bob", ""));
    assert!(resolve(&table, "carol", "a", QuotaKey::ConsumerByteRate).is_none());
}

#[test]
fn quota_entity_encoding_round_trips_awkward_names() {
    for e in [
        entity(named("a/b,c=d%<default>"), named("")),
        entity(D, None),
        entity(None, D),
        entity(named("User:x"), D),
    ] {
        let key = state_key(&e, QuotaKey::RequestPercentage);
        let rest = key.strip_prefix(QUOTA_KEY_PREFIX).expect("prefix");
        assert_eq!(
            parse_state_key(rest).expect("parses"),
            (e.clone(), QuotaKey::RequestPercentage)
        );
    }
    assert_ne!(
        entity(named("<default>"), None).encode(),
        entity(D, None).encode()
    );
    assert!(Entity::from_components([("ip", None)]).is_err());
    assert!(Entity::from_components([("user", None), ("user", Some("x"))]).is_err());
    assert!(Entity::from_components(std::iter::empty()).is_err());
    assert_eq!(decode_value(&encode_value(1.5)), Ok(1.5));
}

#[test]
fn quota_values_are_positive_and_byte_rates_whole() {
    assert!(QuotaKey::ProducerByteRate.validate(1024.0).is_ok());
    assert!(QuotaKey::ProducerByteRate.validate(-1.0).is_err());
    assert!(QuotaKey::ProducerByteRate.validate(0.0).is_err());
    assert!(QuotaKey::ProducerByteRate.validate(1.5).is_err());
    assert!(QuotaKey::RequestPercentage.validate(12.5).is_ok());
    assert!(QuotaKey::RequestPercentage.validate(f64::NAN).is_err());
}

#[test]
fn quota_filters_match_exact_default_specified_and_strictly() {
    let e_user = entity(named("alice"), None);
    let e_both = entity(named("alice"), D);
    let e_default = entity(D, None);
    let f = |user, client_id, strict| Filter {
        user,
        client_id,
        strict,
    };
    let exact = f(Some(Match::Exact("alice".into())), None, false);
    assert!(exact.matches(&e_user) && exact.matches(&e_both) && !exact.matches(&e_default));
    let strict = f(Some(Match::Exact("alice".into())), None, true);
    assert!(strict.matches(&e_user) && !strict.matches(&e_both));
    let default = f(Some(Match::Default), None, false);
    assert!(default.matches(&e_default) && !default.matches(&e_user));
    let specified = f(Some(Match::Specified), None, true);
    assert!(specified.matches(&e_user) && specified.matches(&e_default));
    assert!(!specified.matches(&e_both));
    let clients = f(None, Some(Match::Specified), false);
    assert!(clients.matches(&e_both) && !clients.matches(&e_user));
}

#[test]
fn quota_rate_and_throttle_follow_kafkas_formula() {
    let mut sensor = RateSensor::new(0);
    // 2,000 bytes in the first second against 1,000/s: twice the quota over a 1 s window,
    // (2000 - 1000) / 1000 * 1000 ms = 1 s of throttle.
    sensor.record(2_000.0, 0);
    assert_eq!(sensor.throttle_ms(1_000.0, 0), 1_000);
    assert_eq!(sensor.throttle_ms(4_000.0, 0), 0);
    // After 2 s the same bytes are 1,000/s over the window: at the quota.
    assert_eq!(sensor.rate(2_000), 1_000.0);
    assert_eq!(sensor.throttle_ms(1_000.0, 2_000), 0);
    // A huge burst is capped at the window.
    sensor.record(1e12, 2_000);
    assert_eq!(sensor.throttle_ms(1.0, 2_000), MAX_THROTTLE_MS);
    // Samples older than the window no longer count.
    assert_eq!(sensor.rate(2_000 + MAX_THROTTLE_MS + SAMPLE_MS), 0.0);
}

#[test]
fn quota_sustained_rate_converges_to_the_quota_when_the_client_waits() {
    // A client sending 10,000 bytes whenever it is allowed to, against 5,000/s, for 60 s.
    let mut sensors = Sensors::default();
    let key = SensorKey {
        key: QuotaKey::ProducerByteRate,
        user: String::new(),
        client_id: "greedy".into(),
    };
    let (mut now, mut sent) = (0u64, 0.0);
    while now < 60_000 {
        sent += 10_000.0;
        let throttle = sensors.record(&key, 10_000.0, 5_000.0, now);
        now += throttle.max(1);
    }
    let rate = sent / 60.0;
    assert!((5_000.0 * 0.8..=5_000.0 * 1.2).contains(&rate), "{rate}");
}

#[test]
fn quota_sensors_are_bounded_and_idle_ones_evicted() {
    let mut sensors = Sensors::default();
    let key = |i: usize| SensorKey {
        key: QuotaKey::ProducerByteRate,
        user: String::new(),
        client_id: format!("invented-{i}"),
    };
    for i in 0..MAX_SENSORS + 500 {
        sensors.record(&key(i), 1.0, 1e9, 5);
    }
    assert_eq!(sensors.len(), MAX_SENSORS);
    sensors.record(&key(0), 1.0, 1e9, 5 + MAX_THROTTLE_MS + SAMPLE_MS);
    assert_eq!(sensors.len(), 1, "idle sensors are swept");
}

#[test]
fn quotas_survive_a_reload_and_follow_peer_changes() {
    let dir = tempfile::TempDir::new().expect("dir");
    let catalog = Catalog::open(dir.path()).expect("catalog");
    let security = SecurityStore::load(&catalog, 1, 60_000).expect("load");
    let quotas = Quotas::load(&security);
    assert!(!quotas.any());
    let greedy = entity(None, named("greedy"));
    quotas
        .alter(
            &security,
            &catalog,
            &[
                (greedy.clone(), QuotaKey::ProducerByteRate, Some(1024.0)),
                (entity(D, None), QuotaKey::RequestPercentage, Some(50.0)),
            ],
        )
        .expect("alter");
    assert!(quotas.any());
    let everything = Filter {
        user: None,
        client_id: None,
        strict: false,
    };
    let reloaded = Quotas::load(&SecurityStore::load(&catalog, 1, 60_000).expect("reload"));
    assert_eq!(reloaded.describe(&everything), quotas.describe(&everything));
    // A peer's removal, as broker.rs hands it over (the key after `quota/`).
    let key = state_key(&greedy, QuotaKey::ProducerByteRate);
    reloaded.apply(key.strip_prefix(QUOTA_KEY_PREFIX).expect("prefix"), None);
    assert_eq!(reloaded.describe(&everything).len(), 1);
    // A client over its quota is throttled, one under none is not.
    let throttles = quotas.record(
        "User:ANONYMOUS",
        "greedy",
        Usage {
            produced_bytes: 4096,
            ..Usage::default()
        },
        1_000,
    );
    assert_eq!(throttles, vec![(QuotaKey::ProducerByteRate, 3_000)]);
    assert!(quotas
        .record(
            "User:ANONYMOUS",
            "polite",
            Usage {
                produced_bytes: 4096,
                ..Usage::default()
            },
            1_000
        )
        .is_empty());
}
