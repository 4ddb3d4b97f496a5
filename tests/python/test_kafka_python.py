"""kafka-python 2.x (a pure-Python client) against kopd: the admin calls that decode authorized
operations (they crashed on kopd's old -2147483648), and a produce/consume round trip.

Run:  python3 -m pytest -q tests/python/test_kafka_python.py
"""
import time

import pytest

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer  # installed by scripts/install-peers.sh
from kafka.admin import NewTopic

TOPIC_OPS = {"READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS"}
CLUSTER_OPS = {"CREATE", "ALTER", "DESCRIBE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "IDEMPOTENT_WRITE"}
GROUP_OPS = {"READ", "DELETE", "DESCRIBE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS"}


def op_names(ops):
    """kafka-python gives operations as enum members or names, depending on the call."""
    return {getattr(o, "name", o) for o in ops}


@pytest.fixture(scope="module")
def admin(shared_kopd):
    a = KafkaAdminClient(bootstrap_servers=shared_kopd.bootstrap, request_timeout_ms=20000)
    yield a
    a.close()


def test_admin_calls_that_decode_authorized_operations(shared_kopd, admin):
    admin.create_topics([NewTopic("kp-ops", num_partitions=2, replication_factor=1)])
    deadline = time.monotonic() + 20
    while "kp-ops" not in admin.list_topics():
        assert time.monotonic() < deadline, "topic listed"
        time.sleep(0.2)
    (topic,) = admin.describe_topics(["kp-ops"])
    assert topic["error_code"] == 0
    assert len(topic["partitions"]) == 2
    assert op_names(topic["authorized_operations"]) == TOPIC_OPS
    cluster = admin.describe_cluster()
    assert len(cluster["brokers"]) == 2
    assert op_names(cluster["authorized_operations"]) == CLUSTER_OPS


def test_round_trip_and_group_description(shared_kopd, admin):
    producer = KafkaProducer(bootstrap_servers=shared_kopd.bootstrap, acks="all")
    admin.create_topics([NewTopic("kp-data", num_partitions=1, replication_factor=1)])
    for i in range(20):
        producer.send("kp-data", key=b"k%d" % i, value=b"v%d" % i)
    producer.flush(timeout=30)
    producer.close()

    consumer = KafkaConsumer(
        "kp-data",
        bootstrap_servers=shared_kopd.bootstrap,
        group_id="kp-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=20000,
    )
    got = []
    for msg in consumer:
        got.append((msg.key, msg.value))
        if len(got) == 20:
            break
    consumer.commit()
    assert got == [(b"k%d" % i, b"v%d" % i) for i in range(20)]
    (group,) = admin.describe_consumer_groups(["kp-group"], include_authorized_operations=True)
    assert group.group == "kp-group"
    assert op_names(group.authorized_operations) == GROUP_OPS
    consumer.close()
