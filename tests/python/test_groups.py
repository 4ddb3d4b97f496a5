"""Consumer groups with librdkafka: confluent-kafka consumers sharing a topic and committing, and
kcat's balanced consumer (-G).

Run:  python3 -m pytest -q tests/python/test_groups.py  (KOPD_BIN overrides the binary path)
"""
import shutil
import subprocess
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from kopd_harness import create_topic

FAST = {"group.initial.rebalance.delay.ms": "0"}


def produce(kopd, topic, n, partitions):
    p = Producer({"bootstrap.servers": kopd.bootstrap, "broker.address.family": "v4"})
    for i in range(n):
        p.produce(topic, value=str(i).encode(), key=str(i).encode(), partition=i % partitions)
    assert p.flush(30) == 0


def consumer(kopd, group):
    return Consumer({
        "bootstrap.servers": kopd.bootstrap,
        "broker.address.family": "v4",
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 10000,
    })


def committed_total(kopd, group, topic, partitions):
    c = consumer(kopd, group)
    try:
        offsets = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=20)
        return sum(max(tp.offset, 0) for tp in offsets)
    finally:
        c.close()


def test_confluent_consumers_share_a_topic_and_commit(kopd_factory):
    kopd = kopd_factory(cores=2, settings=FAST)
    topic, group, partitions, n = "pygroups", "py-group", 4, 400
    create_topic(kopd.bootstrap, topic, partitions)
    produce(kopd, topic, n, partitions)
    consumers = [consumer(kopd, group), consumer(kopd, group)]
    seen = set()
    try:
        for c in consumers:
            c.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(seen) < n or any(not c.assignment() for c in consumers):
            assert time.monotonic() < deadline, f"seen {len(seen)}; assignments {[c.assignment() for c in consumers]}"
            for c in consumers:
                msgs = c.consume(num_messages=100, timeout=0.2)
                for m in msgs:
                    if m.error() is None:
                        seen.add(m.value())
                if msgs:
                    try:
                        c.commit(asynchronous=False)
                    except Exception:
                        pass  # mid-rebalance; a later commit covers it
        owned = [{(tp.topic, tp.partition) for tp in c.assignment()} for c in consumers]
        assert not (owned[0] & owned[1]), owned
        assert len(owned[0] | owned[1]) == partitions
        while committed_total(kopd, group, topic, partitions) != n:
            assert time.monotonic() < deadline, "commits never caught up"
            for c in consumers:
                c.consume(num_messages=100, timeout=0.2)
                try:
                    c.commit(asynchronous=False)
                except Exception:
                    pass
    finally:
        for c in consumers:
            c.close()
    assert len(seen) == n


def test_kcat_balanced_consumer(kopd_factory):
    if shutil.which("kcat") is None:
        pytest.fail("kcat is missing: run scripts/install-peers.sh")
    kopd = kopd_factory(cores=2, settings=FAST)
    topic, group, partitions, n = "kcatgroups", "kcat-group", 3, 90
    create_topic(kopd.bootstrap, topic, partitions)
    produce(kopd, topic, n, partitions)
    cmd = ["kcat", "-b", kopd.bootstrap, "-X", "broker.address.family=v4", "-X", "auto.offset.reset=earliest",
           "-G", group, "-e", "-q", "-f", "%s\n", topic]
    r = subprocess.run(cmd, capture_output=True, timeout=90)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    got = set(r.stdout.decode().split())
    assert got == {str(i) for i in range(n)}
    # kcat commits what it consumed when it leaves the group.
    assert committed_total(kopd, group, topic, partitions) == n
