"""kafka-python 3.x admin calls over SASL_PLAINTEXT with SCRAM-SHA-512, as one user: topics and
ACLs (CreateAcls, DescribeAcls, DeleteAcls), committed offsets (OffsetFetch), for
integration-tests/tests/suite/acls.rs.
Usage: python3 kafka_python_acls.py HOST:PORT USER PASSWORD STEPS (USER "-": plaintext, no SASL),
where STEPS is a JSON list of
  {"op": "create_topics", "topics": [NAME, ...]}
  {"op": "delete_topics", "topics": [NAME, ...]}
  {"op": "create_acls", "acls": [BINDING, ...]}
  {"op": "describe_acls", "filter": FILTER}
  {"op": "delete_acls", "filters": [FILTER, ...]}
  {"op": "list_group_offsets", "group": GROUP, "partitions": [[TOPIC, PARTITION], ...],
   "api_version": "2.4.0"}   (optional: a client held to that Kafka version's requests)
  {"op": "describe_topics", "topics": [NAME, ...]}      (the caller's authorized operations, KIP-430)
  {"op": "describe_groups", "groups": [GROUP, ...]}     (the same)
  {"op": "describe_cluster"}                            (the same)
  {"op": "describe_group_configs", "group": GROUP}     (Kafka 4 group configs: name -> value)
  {"op": "alter_group_configs", "group": GROUP, "configs": {NAME: VALUE or null (delete)}}
A BINDING is {"principal", "host", "operation", "permission", "resource_type", "name", "pattern"}
with kafka-python's enum names as values ("READ", "ALLOW", "TOPIC", "PREFIXED"); a FILTER has the
same keys, each optional (a missing one matches anything).
Prints one JSON line: a list with one result per step, or {"error": "<exception class>"} when the
client cannot even start. A step that raises gives {"error": "<exception class>"}."""
import json
import os
import sys

from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import (
    ACL,
    AlterConfigOp,
    ConfigResource,
    ConfigResourceType,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)


def binding(spec):
    return ACL(
        principal=spec["principal"],
        host=spec.get("host", "*"),
        operation=ACLOperation[spec["operation"]],
        permission_type=ACLPermissionType[spec["permission"]],
        resource_pattern=ResourcePattern(
            ResourceType[spec["resource_type"]],
            spec["name"],
            ACLResourcePatternType[spec.get("pattern", "LITERAL")],
        ),
    )


def acl_filter(spec):
    return ACLFilter(
        principal=spec.get("principal"),
        host=spec.get("host"),
        operation=ACLOperation[spec.get("operation", "ANY")],
        permission_type=ACLPermissionType[spec.get("permission", "ANY")],
        resource_pattern=ResourcePatternFilter(
            ResourceType[spec.get("resource_type", "ANY")],
            spec.get("name"),
            ACLResourcePatternType[spec.get("pattern", "ANY")],
        ),
    )


def described(acl):
    return {
        "principal": acl.principal,
        "host": acl.host,
        "operation": acl.operation.name,
        "permission": acl.permission_type.name,
        "resource_type": acl.resource_pattern.resource_type.name,
        "name": acl.resource_pattern.resource_name,
        "pattern": acl.resource_pattern.pattern_type.name,
    }


def sorted_bindings(acls):
    return sorted((described(acl) for acl in acls), key=lambda b: json.dumps(b, sort_keys=True))


def topic_errors(result):
    return {t["name"]: t["error_code"] for t in result["topics"]}


def operations(field):
    """KIP-430's bit field as sorted operation names; None when the broker left it out."""
    if isinstance(field, list):  # kafka-python already turned it into names
        return sorted(field)
    if field is None or field == -(2**31):
        return None
    return sorted(ACLOperation(code).name for code in range(32) if field >> code & 1)


def authorized(described, field="authorized_operations"):
    """The authorized operations of a described resource: kafka-python names the field as the
    protocol does, or `authorized_operations` once it has turned the bits into names."""
    return described.get(field, described.get("authorized_operations"))


def run(connect, admin, step):
    op = step["op"]
    if op == "describe_topics":
        described = admin.describe_topics(step["topics"])
        return {t["name"]: operations(authorized(t, "topic_authorized_operations")) for t in described}
    if op == "describe_groups":
        described = admin.describe_groups(step["groups"], include_authorized_operations=True)
        return {g: operations(authorized(d)) for g, d in described.items()}
    if op == "describe_group_configs":
        resource = ConfigResource(ConfigResourceType.GROUP, step["group"])
        described = admin.describe_configs([resource], config_filter="all")
        return {name: [c["value"], str(c["config_source"])]
                for name, c in described["group"][step["group"]].items()}
    if op == "alter_group_configs":
        configs = {name: (AlterConfigOp.DELETE, None) if value is None else (AlterConfigOp.SET, value)
                   for name, value in step["configs"].items()}
        resource = ConfigResource(ConfigResourceType.GROUP, step["group"], configs)
        result = admin.alter_configs([resource], raise_on_unknown=False, incremental=True)
        return {"result": result["group"][step["group"]].split(":")[0].split("] ")[-1]}
    if op == "describe_cluster":
        cluster = admin.describe_cluster()
        return {"cluster": operations(authorized(cluster, "cluster_authorized_operations"))}
    if op == "list_group_offsets":
        version = step.get("api_version")
        client = connect(tuple(int(v) for v in version.split("."))) if version else admin
        partitions = [TopicPartition(topic, partition) for topic, partition in step["partitions"]]
        offsets = client.list_group_offsets({step["group"]: partitions})[step["group"]]
        return {"offsets": {"%s-%d" % tp: o.offset for tp, o in offsets.items()}}
    if op == "create_topics":
        created = admin.create_topics(
            {name: {"num_partitions": 1, "replication_factor": 1} for name in step["topics"]},
            raise_errors=False,
        )
        return {"error_codes": topic_errors(created)}
    if op == "delete_topics":
        return {"error_codes": topic_errors(admin.delete_topics(step["topics"], raise_errors=False))}
    if op == "create_acls":
        created = admin.create_acls([binding(spec) for spec in step["acls"]])
        return {
            "succeeded": len(created["succeeded"]),
            "failed": [error.__name__ for error in created["failed"]],
        }
    if op == "describe_acls":
        acls, _ = admin.describe_acls(acl_filter(step["filter"]))
        return {"acls": sorted_bindings(acls)}
    if op == "delete_acls":
        results = admin.delete_acls([acl_filter(spec) for spec in step["filters"]])
        return {
            "deleted": [sorted_bindings(matched) for _, matched, _ in results],
            "errors": [error.__name__ for _, _, error in results],
        }
    raise ValueError("unknown op %r" % op)


def main(broker, user, password, steps):
    # User "-": a plaintext listener, no SASL.
    sasl = {} if user == "-" else dict(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username=user,
        sasl_plain_password=password,
    )

    def connect(api_version=None):
        return KafkaAdminClient(
            bootstrap_servers=broker, request_timeout_ms=10000, api_version=api_version, **sasl
        )

    try:
        admin = connect()
    except Exception as error:
        print(json.dumps({"error": type(error).__name__}), flush=True)
        os._exit(0)
    results = []
    for step in json.loads(steps):
        try:
            results.append(run(connect, admin, step))
        except Exception as error:  # the test compares the error's class
            results.append({"error": type(error).__name__})
    print(json.dumps(results), flush=True)
    os._exit(0)  # without waiting for the client's threads


if __name__ == "__main__":
    main(*sys.argv[1:5])
