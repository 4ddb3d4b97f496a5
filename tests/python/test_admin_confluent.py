"""Topic administration against kopd through confluent-kafka (librdkafka).

Run:  python3 -m pytest -q tests/python  (KOPD_BIN overrides the binary path)
"""
import time

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

REQ_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def kopd(shared_kopd):
    yield {"port": shared_kopd.port, "bootstrap": shared_kopd.bootstrap}
    # SIGTERM must end kopd cleanly (exit status 0).
    assert shared_kopd.stop() == 0


@pytest.fixture(scope="module")
def admin(kopd):
    return AdminClient({
        "bootstrap.servers": kopd["bootstrap"],
        "socket.timeout.ms": 10000,
        "broker.address.family": "v4",
    })


def wait_for(predicate, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        ok, detail = predicate()
        if ok:
            return detail
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}: {detail}")
        time.sleep(0.2)


def test_create_list_delete_topic(kopd, admin):
    futures = admin.create_topics([NewTopic("pytopic", num_partitions=4, replication_factor=1)],
                                  operation_timeout=10, request_timeout=REQ_TIMEOUT)
    assert futures["pytopic"].result(timeout=REQ_TIMEOUT) is None

    def listed():
        md = admin.list_topics(timeout=REQ_TIMEOUT)
        t = md.topics.get("pytopic")
        return (t is not None and t.error is None and len(t.partitions) == 4), md

    md = wait_for(listed, what="pytopic with 4 partitions in list_topics")
    assert sorted(md.brokers) == [0, 1]
    assert {b.id: (b.host, b.port) for b in md.brokers.values()} == {
        0: ("127.0.0.1", kopd["port"]),
        1: ("127.0.0.1", kopd["port"] + 1),
    }
    assert md.controller_id == 0
    parts = md.topics["pytopic"].partitions
    assert sorted(parts) == [0, 1, 2, 3]
    assert {p.leader for p in parts.values()} == {0, 1}
    for p in parts.values():
        assert p.replicas == [p.leader]
        assert p.isrs == [p.leader]

    futures = admin.delete_topics(["pytopic"], operation_timeout=10, request_timeout=REQ_TIMEOUT)
    assert futures["pytopic"].result(timeout=REQ_TIMEOUT) is None

    def gone():
        md = admin.list_topics(timeout=REQ_TIMEOUT)
        return "pytopic" not in md.topics, sorted(md.topics)

    wait_for(gone, what="pytopic to disappear from list_topics")


def test_create_existing_topic_fails(admin):
    from confluent_kafka import KafkaError, KafkaException

    f = admin.create_topics([NewTopic("pydup", num_partitions=1, replication_factor=1)],
                            request_timeout=REQ_TIMEOUT)
    f["pydup"].result(timeout=REQ_TIMEOUT)
    f = admin.create_topics([NewTopic("pydup", num_partitions=1, replication_factor=1)],
                            request_timeout=REQ_TIMEOUT)
    with pytest.raises(KafkaException) as exc:
        f["pydup"].result(timeout=REQ_TIMEOUT)
    assert exc.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS
