"""Consumer groups with librdkafka: confluent-kafka consumers sharing a topic and committing, and
kcat's balanced consumer (-G).

Run:  python3 -m pytest -q tests/python/test_groups.py  (KOPD_BIN overrides the binary path)
"""
import shutil
import subprocess
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from kopd_harness import KOPD_BIN, create_topic, free_ports

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


def cursor_table(admin, group):
    """`kopd cursors` rows of a group: {partition: (committed offset, backlog, mark-delete)}."""
    out = subprocess.run([str(KOPD_BIN), "cursors", "--admin", admin, "--group", group],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:6] == ["GROUP", "TOPIC", "PARTITION", "COMMITTED-OFFSET", "LOG-END-OFFSET", "BACKLOG"]
    rows = {}
    for line in lines[1:]:
        g, _topic, part, committed, _end, backlog, mark_delete, _read = line.split()
        assert g == group
        rows[int(part)] = (int(committed), int(backlog), mark_delete)
    return rows


def test_confluent_consumers_share_a_topic_and_commit(kopd_factory):
    admin = f"127.0.0.1:{free_ports(1)}"
    kopd = kopd_factory(cores=2, settings={**FAST, "admin.listen": admin, "group.cursor.mirror.interval.ms": "200"})
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
    # The group's durable cursors follow its commits: every partition fully consumed.
    deadline = time.monotonic() + 30
    while True:
        rows = cursor_table(admin, group)
        done = sorted(rows) == list(range(partitions)) and all(b == 0 for _, b, _ in rows.values())
        if done:
            break
        assert time.monotonic() < deadline, f"cursor view: {rows}"
        time.sleep(0.2)
    assert sum(c for c, _, _ in rows.values()) == n
    assert all(not md.endswith(":-1") for _, _, md in rows.values()), rows


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
