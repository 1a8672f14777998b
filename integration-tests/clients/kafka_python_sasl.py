"""kafka-python 3.x over SASL_PLAINTEXT, or SASL_SSL when a CA file is given: produce and consume
as one user with one mechanism.
Usage: python3 kafka_python_sasl.py HOST:PORT TOPIC MECHANISM USER PASSWORD [CA_FILE].
Prints one JSON line: {"acknowledged": n, "consumed": n} or {"error": "<exception class>"}."""
import json
import os
import sys

from kafka import KafkaConsumer, KafkaProducer

RECORDS = 20


def main(broker, topic, mechanism, user, password, ca_file=None):
    security = dict(
        bootstrap_servers=broker,
        security_protocol="SASL_SSL" if ca_file else "SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_plain_username=user,
        sasl_plain_password=password,
    )
    if ca_file:
        security["ssl_cafile"] = ca_file  # the server's name is checked against it too
    try:
        # A refused login shows as a timeout: kafka-python retries it until then.
        producer = KafkaProducer(max_block_ms=5000, bootstrap_timeout_ms=5000, **security)
        futures = [producer.send(topic, value=b"v%d" % i) for i in range(RECORDS)]
        producer.flush()
        acknowledged = len([f.get(timeout=10) for f in futures])
        producer.close()
        consumer = KafkaConsumer(
            topic,
            auto_offset_reset="earliest",
            consumer_timeout_ms=10000,
            **security,
        )
        consumed = 0
        for _ in consumer:
            consumed += 1
            if consumed == RECORDS:
                break
        consumer.close()
        print(json.dumps({"acknowledged": acknowledged, "consumed": consumed}))
    except Exception as error:  # the test compares the error's class
        print(json.dumps({"error": type(error).__name__}), flush=True)
        os._exit(0)  # without waiting for the client's threads to give up retrying


if __name__ == "__main__":
    main(*sys.argv[1:7])
