use proptest::prelude::*;

use super::*;

fn binding(
    resource_type: ResourceType,
    name: &str,
    pattern_type: PatternType,
    principal: &str,
    operation: Operation,
    permission: Permission,
) -> AclBinding {
    AclBinding {
        pattern: ResourcePattern {
            resource_type,
            name: name.into(),
            pattern_type,
        },
        principal: principal.into(),
        host: "*".into(),
        operation,
        permission,
    }
}

fn allow_topic(name: &str, pattern: PatternType, principal: &str, op: Operation) -> AclBinding {
    binding(
        ResourceType::Topic,
        name,
        pattern,
        principal,
        op,
        Permission::Allow,
    )
}

fn rules(bindings: impl IntoIterator<Item = AclBinding>) -> Rules {
    Rules {
        bindings: bindings.into_iter().collect(),
        ..Rules::default()
    }
}

const ALICE: &str = "User:alice";
const HOST: &str = "127.0.0.1";

fn may(rules: &Rules, op: Operation, topic: &str) -> bool {
    rules.authorize(ALICE, HOST, op, ResourceType::Topic, topic)
}

#[test]
fn a_prefixed_allow_grants_a_family_of_topics_and_nothing_else() {
    let rules = rules([allow_topic(
        "orders-",
        PatternType::Prefixed,
        ALICE,
        Operation::Write,
    )]);
    assert!(may(&rules, Operation::Write, "orders-eu"));
    assert!(may(&rules, Operation::Write, "orders-"));
    assert!(!may(&rules, Operation::Write, "orders"));
    assert!(!may(&rules, Operation::Write, "payments"));
    assert!(!may(&rules, Operation::Read, "orders-eu"));
    assert!(!rules.authorize(
        "User:bob",
        HOST,
        Operation::Write,
        ResourceType::Topic,
        "orders-eu"
    ));
    assert!(!rules.authorize(
        ALICE,
        HOST,
        Operation::Write,
        ResourceType::Group,
        "orders-eu"
    ));
}

#[test]
fn a_deny_beats_an_allow_of_the_same_operation_or_all() {
    let mut rules = rules([allow_topic(
        "*",
        PatternType::Literal,
        "User:*",
        Operation::All,
    )]);
    assert!(may(&rules, Operation::Read, "orders-us"));
    rules.bindings.insert(binding(
        ResourceType::Topic,
        "orders-us",
        PatternType::Literal,
        ALICE,
        Operation::Read,
        Permission::Deny,
    ));
    assert!(!may(&rules, Operation::Read, "orders-us"));
    assert!(
        may(&rules, Operation::Write, "orders-us"),
        "only Read is denied"
    );
    assert!(
        may(&rules, Operation::Describe, "orders-us"),
        "a deny of Read does not deny Describe"
    );
    assert!(may(&rules, Operation::Read, "orders-eu"));
    rules.bindings.insert(binding(
        ResourceType::Topic,
        "orders-",
        PatternType::Prefixed,
        "User:*",
        Operation::All,
        Permission::Deny,
    ));
    assert!(!may(&rules, Operation::Write, "orders-eu"));
    assert!(may(&rules, Operation::Write, "payments"));
}

#[test]
fn describe_is_implied_by_the_operations_kafka_implies_it_by() {
    for op in [
        Operation::Read,
        Operation::Write,
        Operation::Delete,
        Operation::Alter,
    ] {
        let rules = rules([allow_topic("t", PatternType::Literal, ALICE, op)]);
        assert!(may(&rules, Operation::Describe, "t"), "{op:?}");
    }
    for op in [
        Operation::Create,
        Operation::DescribeConfigs,
        Operation::ClusterAction,
    ] {
        let rules = rules([allow_topic("t", PatternType::Literal, ALICE, op)]);
        assert!(!may(&rules, Operation::Describe, "t"), "{op:?}");
    }
    let rules = rules([allow_topic(
        "t",
        PatternType::Literal,
        ALICE,
        Operation::AlterConfigs,
    )]);
    assert!(may(&rules, Operation::DescribeConfigs, "t"));
    assert!(!may(&rules, Operation::Read, "t"));
}

/// KIP-430: the field holds exactly the allowed operations of the resource's type, with the
/// implied ones (Describe, DescribeConfigs), in Kafka's bit positions (librdkafka's 0081_admin expects 8 for a topic).
#[test]
fn authorized_operations_are_the_allowed_operations_of_the_type_as_bits() {
    use Operation::*;
    let bits = |ops: &[Operation]| ops.iter().fold(0, |f, op| f | 1 << op.code());
    let every_topic_op = [
        Read,
        Write,
        Create,
        Delete,
        Alter,
        Describe,
        DescribeConfigs,
        AlterConfigs,
    ];
    assert_eq!(
        operations_field(ResourceType::Topic.operations().iter().copied()),
        0b1101_1111_1000
    );
    assert_eq!(bits(&every_topic_op), 0b1101_1111_1000);

    let mut alice = rules([
        allow_topic("orders-", PatternType::Prefixed, "User:alice", Write),
        allow_topic(
            "orders-eu",
            PatternType::Literal,
            "User:alice",
            AlterConfigs,
        ),
        binding(
            ResourceType::Group,
            "app",
            PatternType::Literal,
            "User:alice",
            Read,
            Permission::Allow,
        ),
        binding(
            ResourceType::Topic,
            "orders-us",
            PatternType::Literal,
            "User:alice",
            All,
            Permission::Deny,
        ),
    ]);
    alice.super_users.insert("User:admin".into());
    let ops = |principal, resource_type, name| {
        alice.authorized_operations(principal, "10.0.0.1", resource_type, name)
    };
    assert_eq!(
        ops("User:alice", ResourceType::Topic, "orders-eu"),
        bits(&[Write, Describe, DescribeConfigs, AlterConfigs])
    );
    assert_eq!(ops("User:alice", ResourceType::Topic, "orders-us"), 0);
    assert_eq!(ops("User:alice", ResourceType::Topic, "payments"), 0);
    assert_eq!(
        ops("User:alice", ResourceType::Group, "app"),
        bits(&[Read, Describe])
    );
    assert_eq!(ops("User:alice", ResourceType::Cluster, CLUSTER_NAME), 0);
    assert_eq!(
        ops("User:admin", ResourceType::Topic, "payments"),
        bits(&every_topic_op)
    );
    assert_eq!(
        ops("User:admin", ResourceType::Cluster, CLUSTER_NAME),
        bits(&[
            Create,
            ClusterAction,
            DescribeConfigs,
            AlterConfigs,
            IdempotentWrite,
            Alter,
            Describe
        ])
    );
}

#[test]
fn hosts_must_match_unless_the_binding_says_any() {
    let mut only_local = allow_topic("t", PatternType::Literal, ALICE, Operation::Read);
    only_local.host = "10.0.0.1".into();
    let rules = rules([only_local]);
    assert!(!may(&rules, Operation::Read, "t"));
    assert!(rules.authorize(ALICE, "10.0.0.1", Operation::Read, ResourceType::Topic, "t"));
}

#[test]
fn super_users_and_the_no_acl_policy() {
    let mut rules = rules([allow_topic(
        "t",
        PatternType::Literal,
        ALICE,
        Operation::Read,
    )]);
    rules.super_users.insert("User:admin".into());
    assert!(rules.authorize(
        "User:admin",
        HOST,
        Operation::Alter,
        ResourceType::Cluster,
        CLUSTER_NAME
    ));
    assert!(!may(&rules, Operation::Read, "untouched"));
    rules.allow_if_no_acl = true;
    assert!(
        may(&rules, Operation::Read, "untouched"),
        "no binding covers it"
    );
    assert!(
        !rules.authorize("User:bob", HOST, Operation::Read, ResourceType::Topic, "t"),
        "a binding covers t, so the policy does not apply"
    );
}

#[test]
fn any_resource_of_a_type_is_what_an_idempotent_producer_needs() {
    let rules = rules([allow_topic(
        "logs-",
        PatternType::Prefixed,
        ALICE,
        Operation::Write,
    )]);
    assert!(rules.authorize_any(ALICE, HOST, Operation::Write, ResourceType::Topic));
    assert!(!rules.authorize_any("User:bob", HOST, Operation::Write, ResourceType::Topic));
    assert!(!rules.authorize_any(ALICE, HOST, Operation::Read, ResourceType::Topic));
    let mut denied = rules.clone();
    denied.bindings.insert(binding(
        ResourceType::Topic,
        "*",
        PatternType::Literal,
        ALICE,
        Operation::Write,
        Permission::Deny,
    ));
    assert!(!denied.authorize_any(ALICE, HOST, Operation::Write, ResourceType::Topic));
}

#[test]
fn filters_select_as_describe_and_delete_acls_do() {
    let literal = allow_topic("orders-eu", PatternType::Literal, ALICE, Operation::Read);
    let prefixed = allow_topic("orders-", PatternType::Prefixed, ALICE, Operation::Write);
    let wildcard = allow_topic("*", PatternType::Literal, "User:bob", Operation::Read);
    let named = |pattern, name: &str| AclFilter {
        name: Some(name.into()),
        pattern,
        ..AclFilter::any()
    };
    let select = |filter: &AclFilter| {
        [&literal, &prefixed, &wildcard]
            .into_iter()
            .filter(|b| filter.matches(b))
            .count()
    };
    assert_eq!(select(&AclFilter::any()), 3);
    assert_eq!(select(&named(PatternFilter::Match, "orders-eu")), 3);
    assert_eq!(select(&named(PatternFilter::Any, "orders-eu")), 1);
    assert_eq!(
        select(&named(
            PatternFilter::Exactly(PatternType::Prefixed),
            "orders-"
        )),
        1
    );
    assert_eq!(
        select(&named(
            PatternFilter::Exactly(PatternType::Prefixed),
            "orders-eu"
        )),
        0
    );
    let bob = AclFilter {
        principal: Some("User:bob".into()),
        ..AclFilter::any()
    };
    assert_eq!(select(&bob), 1);
    let writes = AclFilter {
        operation: Some(Operation::Write),
        permission: Some(Permission::Allow),
        resource_type: Some(ResourceType::Topic),
        ..AclFilter::any()
    };
    assert_eq!(select(&writes), 1);
}

#[test]
fn bindings_kafka_refuses_are_refused_and_stored_ones_read_back() {
    let good = allow_topic("orders-", PatternType::Prefixed, ALICE, Operation::Write);
    assert_eq!(AclBinding::decode(&good.encode()), Ok(good.clone()));
    let bad = [
        allow_topic("", PatternType::Literal, ALICE, Operation::Read),
        allow_topic("t", PatternType::Literal, "alice", Operation::Read),
        allow_topic("*", PatternType::Prefixed, ALICE, Operation::Read),
        binding(
            ResourceType::Cluster,
            "other",
            PatternType::Literal,
            ALICE,
            Operation::Alter,
            Permission::Allow,
        ),
        allow_topic(
            &"x".repeat(MAX_FIELD_BYTES + 1),
            PatternType::Literal,
            ALICE,
            Operation::Read,
        ),
    ];
    for binding in bad {
        assert!(binding.validate().is_err(), "{binding:?}");
        assert!(AclBinding::decode(&binding.encode()).is_err());
    }
    assert!(AclBinding::decode("{not json").is_err());
}

#[test]
fn every_code_round_trips_and_unknown_codes_are_refused() {
    for op in Operation::ALL {
        assert_eq!(Operation::from_code(op.code()), Some(op));
        assert_eq!(Operation::from_name(op.name()), Some(op));
    }
    for code in [0, 1, 13, -1] {
        assert_eq!(Operation::from_code(code), None);
    }
    for t in [
        ResourceType::Topic,
        ResourceType::Group,
        ResourceType::Cluster,
        ResourceType::TransactionalId,
    ] {
        assert_eq!(ResourceType::from_code(t.code()), Some(t));
    }
    assert_eq!(
        ResourceType::from_code(1),
        None,
        "ANY is a filter, not a binding"
    );
    assert_eq!(
        PatternType::from_code(2),
        None,
        "MATCH is a filter, not a binding"
    );
}

fn operation() -> impl Strategy<Value = Operation> {
    prop::sample::select(Operation::ALL.to_vec())
}

fn any_binding() -> impl Strategy<Value = AclBinding> {
    (
        prop::sample::select(vec!["t", "t-", "*", "u"]),
        prop::bool::ANY,
        prop::sample::select(vec![ALICE, "User:*", "User:bob"]),
        operation(),
        prop::bool::ANY,
    )
        .prop_map(|(name, prefixed, principal, op, allow)| {
            binding(
                ResourceType::Topic,
                name,
                if prefixed && name != "*" {
                    PatternType::Prefixed
                } else {
                    PatternType::Literal
                },
                principal,
                op,
                if allow {
                    Permission::Allow
                } else {
                    Permission::Deny
                },
            )
        })
}

proptest! {
    /// Adding a deny never grants anything, adding an allow never refuses anything.
    #[test]
    fn denies_only_take_away_and_allows_only_add(
        bindings in prop::collection::vec(any_binding(), 0..8),
        extra in any_binding(),
        op in operation(),
        topic in prop::sample::select(vec!["t", "t-x", "u", "v"]),
    ) {
        let before = rules(bindings.clone());
        let mut after = before.clone();
        after.bindings.insert(extra.clone());
        let (was, is) = (may(&before, op, topic), may(&after, op, topic));
        match extra.permission {
            Permission::Deny => prop_assert!(!is || was),
            Permission::Allow => prop_assert!(is || !was),
        }
    }
}
