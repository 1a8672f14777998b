//! Users and ACL bindings are replicated between regions (the security state rides with the
//! topic catalog): a user created in one region logs in in another, a grant made in one region
//! opens a topic in another, and a binding deleted in the second stops access in the first. A
//! client that fails over to another region is still itself there, and a consumer group's
//! configs set in one region hold in the other.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use causeway_integration_tests::regions::{with_mesh, MeshPlan};
use causeway_integration_tests::security::{create_user, produce_as, raw_as, Who};
use causeway_integration_tests::{topic_name, wait_until, BrokerProcess};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    CreateAclsRequest, DeleteAclsRequest, DescribeConfigsRequest, IncrementalAlterConfigsRequest,
};
use kafka_protocol::protocol::StrBytes;

const NAMES: [&str; 2] = ["eu", "us"];
const EU: usize = 0;
const US: usize = 1;

const ADMIN: Who = ("admin", "admin-pw-2026");
const ALICE: Who = ("alice", "alice-pw-2026");

/// How long a change may take to reach the other region.
const REPLICATED_WITHIN: Duration = Duration::from_secs(20);

/// Kafka's codes for a topic resource, a literal pattern, Write and Allow.
const TOPIC: i8 = 2;
const LITERAL: i8 = 3;
const WRITE: i8 = 4;
const ALLOW: i8 = 3;

fn secured(plan: MeshPlan, region: usize) -> MeshPlan {
    plan.flag(region, "--kafka-security-protocol", "sasl_plaintext")
        .flag(region, "--sasl-enabled-mechanisms", "SCRAM-SHA-512,PLAIN")
        .flag(region, "--authorization", "acls")
        .flag(region, "--super-users", "User:admin")
}

/// As admin in `region`, grants alice Write on `topic`.
fn grant_alice_write(region: &BrokerProcess, topic: &str) -> Result<()> {
    let creation = AclCreation::default()
        .with_resource_type(TOPIC)
        .with_resource_name(StrBytes::from_string(topic.to_string()))
        .with_resource_pattern_type(LITERAL)
        .with_principal(StrBytes::from_static_str("User:alice"))
        .with_host(StrBytes::from_static_str("*"))
        .with_operation(WRITE)
        .with_permission_type(ALLOW);
    let answer = raw_as(region, ADMIN)?.request(
        2,
        &CreateAclsRequest::default().with_creations(vec![creation]),
    )?;
    ensure!(
        answer.results.iter().all(|r| r.error_code == 0),
        "CreateAcls: {answer:?}"
    );
    Ok(())
}

/// As admin in `region`, deletes every binding of alice on `topic`; how many were deleted.
fn revoke_alice(region: &BrokerProcess, topic: &str) -> Result<usize> {
    let filter = DeleteAclsFilter::default()
        .with_resource_type_filter(TOPIC)
        .with_resource_name_filter(Some(StrBytes::from_string(topic.to_string())))
        .with_pattern_type_filter(LITERAL)
        .with_principal_filter(Some(StrBytes::from_static_str("User:alice")))
        .with_host_filter(None)
        .with_operation(1)
        .with_permission_type(1);
    let answer = raw_as(region, ADMIN)?
        .request(2, &DeleteAclsRequest::default().with_filters(vec![filter]))?;
    let result = answer.filter_results.first().context("no filter result")?;
    ensure!(result.error_code == 0, "DeleteAcls: {answer:?}");
    Ok(result.matching_acls.len())
}

#[test]
fn users_and_acl_bindings_made_in_one_region_hold_in_the_other() {
    let plan = secured(secured(MeshPlan::new(&NAMES).expect("a plan"), EU), US);
    with_mesh(plan, |mesh| {
        // The first users are created offline in eu, as an operator sets up a new cluster.
        mesh.region_mut(EU).terminate()?;
        let eu_data = mesh.region(EU).data_dir().to_path_buf();
        create_user(&eu_data, ADMIN, "SCRAM-SHA-512")?;
        create_user(&eu_data, ALICE, "SCRAM-SHA-512")?;
        mesh.region_mut(EU).restart()?;
        ensure!(
            wait_until(REPLICATED_WITHIN, || raw_as(mesh.region(US), ALICE).is_ok()),
            "alice, created in eu, never logged in in us"
        );

        let topic = topic_name("orders");
        produce_as(mesh.region(EU), ADMIN, &topic, 1).context("admin creates the topic")?;
        ensure!(
            produce_as(mesh.region(US), ALICE, &topic, 1).is_err(),
            "alice wrote in us without a grant"
        );
        grant_alice_write(mesh.region(EU), &topic)?;
        ensure!(
            wait_until(REPLICATED_WITHIN, || produce_as(
                mesh.region(US),
                ALICE,
                &topic,
                1
            )
            .is_ok()),
            "a grant made in eu never opened the topic in us"
        );

        let deleted = revoke_alice(mesh.region(US), &topic)?;
        ensure!(deleted == 1, "us deleted {deleted} bindings, not the grant");
        ensure!(
            wait_until(REPLICATED_WITHIN, || {
                produce_as(mesh.region(EU), ALICE, &topic, 1)
                    .is_err_and(|e| format!("{e:#}").contains("TopicAuthorizationFailed"))
            }),
            "a binding deleted in us still let alice write in eu"
        );
        produce_as(mesh.region(EU), ADMIN, &topic, 1).context("admin still writes")?;

        // A group's config travels the same way (Kafka 4 group configs).
        set_group_heartbeat(mesh.region(EU), "orders-app", "7000")?;
        ensure!(
            wait_until(REPLICATED_WITHIN, || group_heartbeat(
                mesh.region(US),
                "orders-app"
            )
            .is_ok_and(|value| value == "7000")),
            "a group config set in eu never reached us"
        );
        Ok(())
    });
}

/// Kafka's resource type of a consumer group's configs.
const GROUP_CONFIGS: i8 = 32;

/// As admin in `region`, sets `group`'s `consumer.heartbeat.interval.ms` to `value`.
fn set_group_heartbeat(region: &BrokerProcess, group: &str, value: &str) -> Result<()> {
    let config = AlterableConfig::default()
        .with_name(StrBytes::from_static_str("consumer.heartbeat.interval.ms"))
        .with_config_operation(0)
        .with_value(Some(StrBytes::from_string(value.to_string())));
    let resource = AlterConfigsResource::default()
        .with_resource_type(GROUP_CONFIGS)
        .with_resource_name(StrBytes::from_string(group.to_string()))
        .with_configs(vec![config]);
    let answer = raw_as(region, ADMIN)?.request(
        1,
        &IncrementalAlterConfigsRequest::default().with_resources(vec![resource]),
    )?;
    ensure!(
        answer.responses.iter().all(|r| r.error_code == 0),
        "IncrementalAlterConfigs: {answer:?}"
    );
    Ok(())
}

/// `group`'s `consumer.heartbeat.interval.ms` as admin in `region` describes it.
fn group_heartbeat(region: &BrokerProcess, group: &str) -> Result<String> {
    let resource = DescribeConfigsResource::default()
        .with_resource_type(GROUP_CONFIGS)
        .with_resource_name(StrBytes::from_string(group.to_string()))
        .with_configuration_keys(Some(vec![StrBytes::from_static_str(
            "consumer.heartbeat.interval.ms",
        )]));
    let answer = raw_as(region, ADMIN)?.request(
        4,
        &DescribeConfigsRequest::default().with_resources(vec![resource]),
    )?;
    let value = answer
        .results
        .first()
        .and_then(|r| r.configs.first())
        .and_then(|c| c.value.clone())
        .context("no value described")?;
    Ok(value.to_string())
}
