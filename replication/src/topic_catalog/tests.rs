//! Tests of `topic_catalog.rs`, kept apart so the module reads as what it does.

use super::*;
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;

fn s(hlc: u64, region: u32) -> CatalogStamp {
    CatalogStamp::new(hlc, region)
}

fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn merged(a: &TopicCatalog, b: &TopicCatalog) -> TopicCatalog {
    let mut out = a.clone();
    out.merge(b);
    out
}

// ---- unit tests -------------------------------------------------------------------------

#[test]
fn create_view_and_local_errors() {
    let mut cat = TopicCatalog::new();
    cat.create("orders", 3, configs(&[("retention.ms", "1000")]), s(10, 1))
        .unwrap();
    let view = cat.get("orders").unwrap();
    assert_eq!(view.partitions, 3);
    assert_eq!(view.configs, configs(&[("retention.ms", "1000")]));
    assert_eq!(
        cat.create("orders", 1, BTreeMap::new(), s(11, 1)),
        Err(CatalogError::AlreadyExists("orders".into()))
    );
    assert_eq!(
        cat.delete("nope", s(12, 1)),
        Err(CatalogError::UnknownTopic("nope".into()))
    );
    assert!(matches!(
        cat.add_partitions("orders", 3, s(13, 1)),
        Err(CatalogError::InvalidPartitions {
            requested: 3,
            current: 3
        })
    ));
    assert!(matches!(
        cat.add_partitions("orders", 5, s(10, 1)),
        Err(CatalogError::StaleStamp { .. })
    ));
    assert!(matches!(
        cat.create("x", 0, BTreeMap::new(), s(1, 1)),
        Err(CatalogError::InvalidPartitions { .. })
    ));
    assert!(matches!(
        cat.create(&"n".repeat(250), 1, BTreeMap::new(), s(1, 1)),
        Err(CatalogError::TooLong { .. })
    ));
    cat.add_partitions("orders", 5, s(14, 1)).unwrap();
    cat.set_config("orders", "retention.ms", None, s(15, 1))
        .unwrap();
    cat.set_config("orders", "cleanup.policy", Some("compact".into()), s(16, 1))
        .unwrap();
    let view = cat.get("orders").unwrap();
    assert_eq!(view.partitions, 5);
    assert_eq!(view.configs, configs(&[("cleanup.policy", "compact")]));
    assert_eq!(cat.max_stamp(), Some(s(16, 1)));
    let old_id = view.topic_id;

    cat.delete("orders", s(17, 1)).unwrap();
    assert!(cat.get("orders").is_none());
    assert_eq!(cat.alive().count(), 0);
    assert!(matches!(
        cat.create("orders", 1, BTreeMap::new(), s(17, 0)),
        Err(CatalogError::StaleStamp { .. })
    ));
    cat.create("orders", 1, BTreeMap::new(), s(18, 1)).unwrap();
    let view = cat.get("orders").unwrap();
    assert_eq!(view.partitions, 1, "a re-create starts afresh");
    assert!(view.configs.is_empty());
    assert_ne!(view.topic_id, old_id);
}

#[test]
fn merge_reports_created_partitions_configs_deleted_recreated() {
    let mut a = TopicCatalog::new();
    let mut b = TopicCatalog::new();
    a.create("t", 2, BTreeMap::new(), s(1, 0)).unwrap();
    assert_eq!(
        b.merge(&a),
        vec![CatalogChange::Created {
            name: "t".into(),
            partitions: 2
        }]
    );
    assert_eq!(b.merge(&a), vec![], "idempotent merges report nothing");

    a.add_partitions("t", 4, s(2, 0)).unwrap();
    a.set_config("t", "k", Some("v".into()), s(3, 0)).unwrap();
    assert_eq!(
        b.merge(&a),
        vec![
            CatalogChange::PartitionsAdded {
                name: "t".into(),
                total: 4
            },
            CatalogChange::ConfigsChanged { name: "t".into() },
        ]
    );

    a.delete("t", s(4, 0)).unwrap();
    let tombstone = a.clone();
    assert_eq!(
        b.merge(&a),
        vec![CatalogChange::Deleted { name: "t".into() }]
    );

    a.create("t", 1, BTreeMap::new(), s(5, 0)).unwrap();
    assert_eq!(
        b.merge(&a),
        vec![CatalogChange::Created {
            name: "t".into(),
            partitions: 1
        }]
    );

    // A region that never saw the delete learns of delete and re-create at once.
    let mut d = TopicCatalog::new();
    d.create("t", 9, BTreeMap::new(), s(0, 3)).unwrap();
    let before_id = d.get("t").unwrap().topic_id;
    assert_eq!(
        d.merge(&a),
        vec![CatalogChange::Recreated {
            name: "t".into(),
            partitions: 1
        }]
    );
    assert_ne!(d.get("t").unwrap().topic_id, before_id);
    assert_eq!(d.encode(), merged(&a, &d).encode());

    // A tombstone-only change is persisted but invisible.
    let mut e = tombstone.clone();
    let mut later_delete = tombstone.clone();
    later_delete
        .create("t", 1, BTreeMap::new(), s(6, 2))
        .unwrap();
    later_delete.delete("t", s(7, 2)).unwrap();
    let outcome = e.merge_topic("t", later_delete.topic("t").unwrap());
    assert!(outcome.state_changed);
    assert!(outcome.changes.is_empty());
}

#[test]
fn concurrent_creates_are_one_topic_with_max_partitions_and_merged_configs() {
    let mut a = TopicCatalog::new();
    let mut b = TopicCatalog::new();
    a.create("t", 3, configs(&[("x", "a"), ("y", "a")]), s(10, 0))
        .unwrap();
    b.create("t", 8, configs(&[("x", "b")]), s(10, 1)).unwrap();
    let ab = merged(&a, &b);
    assert_eq!(ab.encode(), merged(&b, &a).encode());
    let view = ab.get("t").unwrap();
    assert_eq!(view.partitions, 8);
    assert_eq!(view.configs, configs(&[("x", "b"), ("y", "a")]));
    assert_eq!(
        view.topic_id,
        a.get("t").unwrap().topic_id,
        "same id everywhere"
    );
    assert_eq!(
        a.merge(&b),
        vec![
            CatalogChange::PartitionsAdded {
                name: "t".into(),
                total: 8
            },
            CatalogChange::ConfigsChanged { name: "t".into() },
        ]
    );
}

#[test]
fn writes_racing_a_delete_do_not_leak_into_the_next_incarnation() {
    let mut a = TopicCatalog::new();
    a.create("t", 2, BTreeMap::new(), s(1, 0)).unwrap();
    let mut b = a.clone();
    // b grows the topic and sets a config while a deletes it concurrently (but earlier).
    a.delete("t", s(2, 0)).unwrap();
    b.add_partitions("t", 10, s(3, 1)).unwrap();
    b.set_config("t", "k", Some("v".into()), s(3, 1))
        .unwrap_err(); // stale: same stamp
    b.set_config("t", "k", Some("v".into()), s(4, 1)).unwrap();
    a.merge(&b);
    assert!(a.get("t").is_none(), "the add does not revive the topic");
    // a re-creates later: it starts afresh even though it holds the orphaned writes.
    a.create("t", 1, BTreeMap::new(), s(5, 0)).unwrap();
    let view = a.get("t").unwrap();
    assert_eq!(view.partitions, 1);
    assert!(view.configs.is_empty());
    b.merge(&a);
    assert_eq!(a.encode(), b.encode());
    // The next delete sweeps the orphans away.
    a.delete("t", s(6, 0)).unwrap();
    let state = a.topic("t").unwrap();
    assert!(state.partitions.is_empty() && state.configs.is_empty());
}

#[test]
fn a_restored_topic_is_as_before_the_change_that_failed() {
    let mut cat = TopicCatalog::new();
    cat.create("kept", 2, configs(&[]), s(10, 1))
        .expect("create kept");
    let before = cat.clone();
    let previous = cat.topic("kept").cloned();
    cat.add_partitions("kept", 5, s(11, 1)).expect("grow kept");
    cat.restore("kept", previous);
    assert_eq!(cat, before);
    cat.create("new", 1, configs(&[]), s(12, 1))
        .expect("create new");
    cat.restore("new", None);
    assert_eq!(cat, before);
    assert_eq!(cat.digest(), before.digest());
}

#[test]
fn dominated_partition_entries_are_dropped() {
    let mut a = TopicCatalog::new();
    a.create("t", 2, BTreeMap::new(), s(1, 0)).unwrap();
    a.add_partitions("t", 4, s(2, 0)).unwrap();
    a.add_partitions("t", 6, s(3, 0)).unwrap();
    assert_eq!(
        a.topic("t").unwrap().partitions,
        BTreeSet::from([(s(3, 0), 6)])
    );
}

#[test]
fn encoding_is_pinned() {
    let mut cat = TopicCatalog::new();
    cat.create("ab", 3, configs(&[("k", "v")]), s(300, 2))
        .unwrap();
    let bytes = cat.encode();
    assert_eq!(
        bytes,
        vec![
            1, 1, 2, b'a', b'b', // version, one topic, name
            0,    // not deleted
            1, 0xac, 0x02, 2, // one create at (300, 2)
            1, 0xac, 0x02, 2, 3, // partitions: (300, 2) -> 3
            1, 1, b'k', 0xac, 0x02, 2, 1, 1, b'v', // configs: k = v at (300, 2)
        ]
    );
    assert_eq!(TopicCatalog::decode(&bytes).unwrap(), cat);
    let topic = cat.topic("ab").unwrap();
    assert_eq!(TopicState::decode(&topic.encode()).unwrap(), *topic);
    assert_eq!(cat.digest(), fnv1a_64(&bytes));
    assert_eq!(TopicCatalog::new().encode(), vec![1, 0]);
    assert_eq!(
        TopicCatalog::decode(&[2, 0]),
        Err(CatalogError::UnsupportedVersion(2))
    );
    assert!(TopicCatalog::decode(&[1, 0, 0]).is_err(), "trailing bytes");
    assert!(
        TopicCatalog::decode(&[1, 0x80, 0]).is_err(),
        "overlong varint"
    );
    assert!(TopicCatalog::decode(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
}

#[test]
fn topic_id_is_pinned_and_well_formed() {
    // Ids are what Kafka clients cache: they must never change across versions.
    let id = topic_id("orders", None);
    assert_eq!(id, topic_id("orders", None));
    assert_eq!(id[6] >> 4, 8, "version 8");
    assert_eq!(id[8] >> 6, 2, "RFC variant");
    let pinned = [
        0x39, 0x51, 0xf5, 0x69, 0xa5, 0x34, 0x8d, 0x05, 0x83, 0x6c, 0x9e, 0xfe, 0x6e, 0x4c, 0xca,
        0x9a,
    ];
    assert_eq!(id, pinned, "the topic id of \"orders\" changed");
    assert_ne!(topic_id("orders", Some(s(1, 0))), id);
    assert_ne!(
        topic_id("orders", Some(s(1, 0))),
        topic_id("orders", Some(s(1, 1)))
    );
    assert_ne!(topic_id("orderz", None), id);
    for n in 0..2000u32 {
        let id = topic_id(&format!("t{n}"), Some(s(u64::from(n), n)));
        assert_ne!(id, [0; 16]);
        assert_ne!(id[0] >> 2, 62, "base64 form would start with '-'");
    }
}

// ---- property tests ---------------------------------------------------------------------

/// 256 cases unless `PROPTEST_CASES` asks for another number (for long soak runs).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(256)
}

/// Small ranges so stamps, keys and names collide often.
fn stamp_strategy() -> impl Strategy<Value = CatalogStamp> {
    (0u64..12, 0u32..3).prop_map(|(hlc, region)| s(hlc, region))
}

/// Arbitrary canonical states, including ones no operation history produces exactly (equal
/// stamps with different counts or values), so merge is tested beyond the happy path.
fn topic_state_strategy() -> impl Strategy<Value = TopicState> {
    (
        vec((stamp_strategy(), 1u32..6), 0..4),
        option::of(stamp_strategy()),
        vec((stamp_strategy(), 1u32..20), 0..4),
        vec((0usize..3, stamp_strategy(), option::of(0usize..3)), 0..5),
    )
        .prop_map(|(creates, deleted, adds, sets)| {
            let mut state = TopicState::default();
            for (stamp, count) in creates {
                state.creates.insert(stamp);
                state.partitions.insert((stamp, count));
            }
            state.deleted = deleted;
            state.partitions.extend(adds);
            for (key, stamp, value) in sets {
                let value = value.map(|v| format!("v{v}"));
                put_register(&mut state.configs, &format!("k{key}"), (stamp, value));
            }
            if state.creates.is_empty() && state.deleted.is_none() {
                state.deleted = Some(s(0, 0));
            }
            state.normalize();
            state
        })
}

fn catalog_strategy() -> impl Strategy<Value = TopicCatalog> {
    btree_map(
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("c".to_owned())
        ],
        topic_state_strategy(),
        0..3,
    )
    .prop_map(|topics| TopicCatalog { topics })
}

/// One step of a multi-region history.
#[derive(Debug, Clone)]
enum Action {
    Create {
        name: usize,
        partitions: u32,
        config: Option<usize>,
    },
    Delete {
        name: usize,
    },
    AddPartitions {
        name: usize,
        more: u32,
    },
    SetConfig {
        name: usize,
        key: usize,
        value: Option<usize>,
    },
    Sync {
        from: usize,
    },
}

fn action_strategy() -> impl Strategy<Value = (usize, Action)> {
    let action = prop_oneof![
        (0usize..2, 1u32..5, option::of(0usize..2)).prop_map(|(name, partitions, config)| {
            Action::Create {
                name,
                partitions,
                config,
            }
        }),
        (0usize..2).prop_map(|name| Action::Delete { name }),
        (0usize..2, 1u32..4).prop_map(|(name, more)| Action::AddPartitions { name, more }),
        (0usize..2, 0usize..2, option::of(0usize..3))
            .prop_map(|(name, key, value)| Action::SetConfig { name, key, value }),
        (0usize..3).prop_map(|from| Action::Sync { from }),
    ];
    (0usize..3, action)
}

/// A region: its catalog and its clock, which observes every merged stamp.
#[derive(Clone)]
struct Region {
    id: u32,
    hlc: u64,
    catalog: TopicCatalog,
}

impl Region {
    fn tick(&mut self) -> CatalogStamp {
        self.hlc = self.hlc.max(self.catalog.max_stamp().map_or(0, |s| s.hlc)) + 1;
        s(self.hlc, self.id)
    }

    fn apply(&mut self, action: &Action) {
        let names = ["x", "y"];
        let stamp = self.tick();
        // Refusals (exists, unknown, ...) are part of the history, like in a real broker.
        let _ = match *action {
            Action::Create {
                name,
                partitions,
                config,
            } => {
                let configs = config
                    .map(|c| BTreeMap::from([(format!("k{c}"), format!("r{}", self.id))]))
                    .unwrap_or_default();
                self.catalog.create(names[name], partitions, configs, stamp)
            }
            Action::Delete { name } => self.catalog.delete(names[name], stamp),
            Action::AddPartitions { name, more } => {
                let current = self.catalog.get(names[name]).map_or(0, |v| v.partitions);
                self.catalog
                    .add_partitions(names[name], current + more, stamp)
            }
            Action::SetConfig { name, key, value } => self.catalog.set_config(
                names[name],
                &format!("k{key}"),
                value.map(|v| format!("v{v}")),
                stamp,
            ),
            Action::Sync { .. } => Ok(()),
        };
    }
}

type Snapshot = BTreeMap<String, TopicView>;

fn snapshot(catalog: &TopicCatalog) -> Snapshot {
    catalog.alive().map(|(n, v)| (n.to_owned(), v)).collect()
}

/// Replays `changes` on the broker's previous picture and checks it lands exactly on the new
/// one, and that no change is spurious.
fn check_changes(before: &Snapshot, after: &Snapshot, changes: &[CatalogChange]) {
    let mut model = before.clone();
    for change in changes {
        match change {
            CatalogChange::Created { name, partitions } => {
                assert!(!model.contains_key(name));
                assert_eq!(after[name].partitions, *partitions);
                model.insert(name.clone(), after[name].clone());
            }
            CatalogChange::Recreated { name, partitions } => {
                assert_ne!(model[name].topic_id, after[name].topic_id);
                assert_eq!(after[name].partitions, *partitions);
                model.insert(name.clone(), after[name].clone());
            }
            CatalogChange::Deleted { name } => {
                assert!(model.remove(name).is_some());
            }
            CatalogChange::PartitionsAdded { name, total } => {
                let view = model.get_mut(name).unwrap();
                assert!(*total > view.partitions, "partitions only grow");
                view.partitions = *total;
            }
            CatalogChange::ConfigsChanged { name } => {
                let view = model.get_mut(name).unwrap();
                assert_ne!(view.configs, after[name].configs);
                view.configs = after[name].configs.clone();
            }
        }
    }
    assert_eq!(&model, after);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn merge_is_commutative(a in catalog_strategy(), b in catalog_strategy()) {
        prop_assert_eq!(merged(&a, &b).encode(), merged(&b, &a).encode());
    }

    #[test]
    fn merge_is_associative(
        a in catalog_strategy(),
        b in catalog_strategy(),
        c in catalog_strategy(),
    ) {
        let left = merged(&merged(&a, &b), &c);
        let right = merged(&a, &merged(&b, &c));
        prop_assert_eq!(left.encode(), right.encode());
    }

    #[test]
    fn merge_is_idempotent_and_reports_changes_exactly(
        a in catalog_strategy(),
        b in catalog_strategy(),
    ) {
        prop_assert_eq!(merged(&a, &a).encode(), a.encode());
        let mut ab = a.clone();
        let changes = ab.merge(&b);
        check_changes(&snapshot(&a), &snapshot(&ab), &changes);
        let again = ab.clone();
        prop_assert_eq!(ab.merge(&b), vec![]);
        prop_assert_eq!(ab.merge(&a), vec![]);
        prop_assert_eq!(ab.encode(), again.encode());
    }

    #[test]
    fn encoding_round_trips(a in catalog_strategy()) {
        let bytes = a.encode();
        let decoded = TopicCatalog::decode(&bytes).unwrap();
        prop_assert_eq!(&decoded, &a);
        prop_assert_eq!(decoded.digest(), a.digest());
        for (_, state) in a.topics() {
            prop_assert_eq!(&TopicState::decode(&state.encode()).unwrap(), state);
        }
        // Loading topic by topic (as from RocksDB) rebuilds the same catalog.
        let mut loaded = TopicCatalog::new();
        for (name, state) in a.topics() {
            loaded.merge_topic(name, state);
        }
        prop_assert_eq!(loaded.encode(), bytes);
    }

    #[test]
    fn decode_of_random_bytes_never_panics(bytes in vec(any::<u8>(), 0..200)) {
        // Whatever decodes is canonical: it re-encodes to the very same bytes.
        if let Ok(catalog) = TopicCatalog::decode(&bytes) {
            prop_assert_eq!(catalog.encode(), bytes.clone());
        }
        if let Ok(state) = TopicState::decode(&bytes) {
            prop_assert_eq!(state.encode(), bytes);
        }
    }

    #[test]
    fn decode_of_corrupted_encodings_never_panics(
        a in catalog_strategy(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = a.encode();
        for (at, byte) in flips {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        if let Ok(catalog) = TopicCatalog::decode(&bytes) {
            prop_assert_eq!(catalog.encode(), bytes.clone());
        }
        let truncated = &bytes[..cut.index(bytes.len())];
        if let Ok(catalog) = TopicCatalog::decode(truncated) {
            prop_assert_eq!(catalog.encode(), truncated.to_vec());
        }
    }

    #[test]
    fn any_history_converges_whatever_the_merge_order(
        actions in vec(action_strategy(), 0..40),
        order in Just((0usize..3).collect::<Vec<_>>()).prop_shuffle(),
    ) {
        let mut regions: Vec<Region> = (0..3)
            .map(|id| Region { id, hlc: 0, catalog: TopicCatalog::new() })
            .collect();
        for (at, action) in &actions {
            if let Action::Sync { from } = *action {
                let source = regions[from].catalog.clone();
                let before = snapshot(&regions[*at].catalog);
                let changes = regions[*at].catalog.merge(&source);
                check_changes(&before, &snapshot(&regions[*at].catalog), &changes);
            } else {
                regions[*at].apply(action);
            }
            for region in &regions {
                let bytes = region.catalog.encode();
                prop_assert_eq!(&TopicCatalog::decode(&bytes).unwrap(), &region.catalog);
                for (_, view) in region.catalog.alive() {
                    prop_assert!(view.partitions >= 1);
                }
            }
        }
        // Full merge in a fixed order and in a shuffled one, and a gossip round: all equal.
        let mut forward = TopicCatalog::new();
        for region in &regions {
            forward.merge(&region.catalog);
        }
        let mut shuffled = TopicCatalog::new();
        for &i in &order {
            shuffled.merge(&regions[i].catalog);
        }
        prop_assert_eq!(forward.encode(), shuffled.encode());
        let snapshot_regions = regions.clone();
        for region in &mut regions {
            for other in snapshot_regions.iter().rev() {
                region.catalog.merge(&other.catalog);
            }
            prop_assert_eq!(region.catalog.encode(), forward.encode());
            prop_assert_eq!(region.catalog.digest(), forward.digest());
        }
    }

    #[test]
    fn create_after_delete_wins_and_delete_after_create_wins(
        delete_at in 2u64..50,
        create_at in 2u64..50,
        regions in (0u32..4, 0u32..4),
    ) {
        prop_assume!(delete_at != create_at);
        // Region A created the topic at 1 and deletes it; region B, which never saw it,
        // creates the same name concurrently.
        let mut a = TopicCatalog::new();
        a.create("t", 2, BTreeMap::new(), s(1, regions.0)).unwrap();
        a.delete("t", s(delete_at, regions.0)).unwrap();
        let mut b = TopicCatalog::new();
        b.create("t", 5, BTreeMap::new(), s(create_at, regions.1)).unwrap();
        let ab = merged(&a, &b);
        prop_assert_eq!(ab.encode(), merged(&b, &a).encode());
        let view = ab.get("t");
        prop_assert_eq!(view.is_some(), create_at > delete_at);
        if let Some(view) = view {
            prop_assert_eq!(view.partitions, 5);
        }
    }

    #[test]
    fn concurrent_creates_converge_to_one_topic_with_max_partitions(
        counts in vec((1u32..100, 1u64..20), 2..5),
    ) {
        let catalogs: Vec<TopicCatalog> = counts
            .iter()
            .enumerate()
            .map(|(region, &(count, hlc))| {
                let mut catalog = TopicCatalog::new();
                catalog.create("t", count, BTreeMap::new(), s(hlc, region as u32)).unwrap();
                catalog
            })
            .collect();
        let mut forward = TopicCatalog::new();
        let mut backward = TopicCatalog::new();
        for catalog in &catalogs {
            forward.merge(catalog);
        }
        for catalog in catalogs.iter().rev() {
            backward.merge(catalog);
        }
        prop_assert_eq!(forward.encode(), backward.encode());
        prop_assert_eq!(forward.alive().count(), 1);
        let view = forward.get("t").unwrap();
        prop_assert_eq!(view.partitions, counts.iter().map(|&(c, _)| c).max().unwrap());
        prop_assert_eq!(view.topic_id, catalogs[0].get("t").unwrap().topic_id);
    }
}
