"""kafka-python 3.x as a consumer group member that moves between regions: subscribes to TOPIC
in group GROUP (starting from the group's committed position, or the earliest record), reads for
at least SECONDS and then until offset END of partition 0 (END < 0: no end), committing every 100
records and at the end. Usage: python3 kafka_python_group.py HOST:PORT TOPIC GROUP SECONDS END.
Prints one JSON line {"payloads": [...], "offsets": [...], "committed": next offset or -1}; exits 1 on failure."""
import json
import sys
import time

from kafka import KafkaConsumer

PATIENCE_SECONDS = 60


def main(broker, topic, group, seconds, end):
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    payloads = []
    offsets = []
    next_offset = -1
    started = time.monotonic()
    while time.monotonic() - started < seconds or (end >= 0 and next_offset < end):
        if time.monotonic() - started > seconds + PATIENCE_SECONDS:
            raise RuntimeError(f"read {len(payloads)} records, next offset {next_offset}, wanted {end}")
        for messages in consumer.poll(timeout_ms=100).values():
            for message in messages:
                payloads.append(message.value.decode())
                offsets.append(message.offset)
                next_offset = message.offset + 1
                if len(payloads) % 100 == 0:
                    consumer.commit()
    if payloads:
        consumer.commit()
    consumer.close()
    print(json.dumps({"payloads": payloads, "offsets": offsets, "committed": next_offset}))


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]))
    except Exception as error:  # noqa: BLE001 - any failure fails the test with its message
        print(f"kafka_python_group.py: {error!r}", file=sys.stderr)
        sys.exit(1)
