"""kafka-python 3.x against a Causeway broker: admin topic creation and configs, the default
(idempotent) producer, a consumer group that commits, and the group listed by the admin client.
Usage: python3 kafka_python_roundtrip.py HOST:PORT TOPIC. Prints one JSON line; exits 1 on failure."""
import json
import sys

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

RECORDS = 50


def main(broker, topic):
    admin = KafkaAdminClient(bootstrap_servers=broker)
    admin.create_topics([NewTopic(topic, 3, 1, topic_configs={"retention.ms": "3600000"})])
    configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    retention = configs["topic"][topic]["retention.ms"]["value"]
    producer = KafkaProducer(bootstrap_servers=broker, compression_type="gzip")
    futures = [producer.send(topic, key=b"k%d" % i, value=b"v%d" % i) for i in range(RECORDS)]
    producer.flush()
    offsets = [f.get(timeout=10).offset for f in futures]
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker,
        group_id=topic + "-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10000,
    )
    seen = []
    for message in consumer:
        seen.append((message.key, message.value))
        if len(seen) == RECORDS:
            break
    consumer.commit()
    consumer.close()
    listed = admin.list_groups()
    groups = repr(listed)
    print(json.dumps({
        "retention_ms": retention,
        "acknowledged": len(offsets),
        "consumed": len(seen),
        "distinct": len(set(seen)),
        "group_listed": (topic + "-group") in groups,
    }))


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    except Exception as error:  # any failure is a failed test
        print("FAILED: %r" % (error,), file=sys.stderr)
        sys.exit(1)
