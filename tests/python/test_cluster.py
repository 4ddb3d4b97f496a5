"""confluent-kafka (librdkafka) against a kopd cluster: 3 nodes x 2 cores over one ZooKeeper
and three bookies (scripts/bookkeeper-cluster.sh). Produce through one node, consume in a group
through another, metadata from the third; then kill -9 a node during idempotent production and
group consumption: nothing acknowledged is lost or duplicated and the group reads everything.

Run:  python3 -m pytest -q tests/python/test_cluster.py
"""
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from kopd_harness import REPO, Kopd, consume_all, create_topic, free_ports

SESSION_MS = 4000
NODES = 3
CORES = 2


class Cluster:
    def __init__(self, root, name):
        self.root = Path(root)
        self.bk_dir = self.root / "bk"
        self.zk_port = free_ports(4)
        self.name = name
        self.nodes = []

    def script(self, *args):
        return subprocess.run(["bash", str(REPO / "scripts" / "bookkeeper-cluster.sh"), *args,
                               "--dir", str(self.bk_dir)], capture_output=True, text=True, timeout=180)

    def start(self, nodes):
        r = self.script("start", "--fresh", "--zk-port", str(self.zk_port), "--bookies", "3",
                        "--bookie-port", str(self.zk_port + 1), "--owner-pid", str(os.getpid()))
        assert r.returncode == 0, f"bookkeeper-cluster.sh start failed:\n{r.stderr}"
        settings = {
            "storage": "bookkeeper",
            "metadata.service.uri": f"zk+hierarchical://127.0.0.1:{self.zk_port}/ledgers",
            "metadata.store": f"zk://127.0.0.1:{self.zk_port}/{self.name}",
            "cluster.name": self.name,
            "zookeeper.session.timeout.ms": SESSION_MS,
            "cluster.poll.interval.ms": 100,
            "group.initial.rebalance.delay.ms": 0,
            "admin.listen": "",
            "shutdown.timeout.ms": 10000,
        }
        for i in range(nodes):
            self.nodes.append(Kopd(self.root / f"node{i}", cores=CORES, settings=settings).start())
        return self

    def node_of(self, port):
        for i, k in enumerate(self.nodes):
            if k.port <= port < k.port + CORES and k.proc.poll() is None:
                return i
        return -1

    def close(self):
        for k in self.nodes:
            k.kill()
        self.script("stop")


@pytest.fixture
def cluster():
    with tempfile.TemporaryDirectory(prefix="kopd-py-cluster-") as tmp:
        c = Cluster(tmp, "pycluster").start(NODES)
        try:
            yield c
        finally:
            c.close()


def leaders_by_node(c, admin, topic, timeout=60.0):
    """partition -> node index of its leader, once every partition has a live leader."""
    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(topic=topic, timeout=30)
        ports = {b.id: b.port for b in md.brokers.values()}
        t = md.topics.get(topic)
        if t is not None and t.error is None:
            nodes = {p.id: c.node_of(ports.get(p.leader, -1)) for p in t.partitions.values()}
            if nodes and all(n >= 0 for n in nodes.values()):
                return nodes, md
        if time.monotonic() > deadline:
            pytest.fail(f"{topic} has partitions without a live leader: {t and t.partitions}")
        time.sleep(0.2)


def group_consumer(bootstrap, group):
    return Consumer({
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
    })


def idempotent_producer(bootstrap, errors):
    return Producer({
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 120000,
        "topic.metadata.refresh.interval.ms": 5000,
        "error_cb": lambda e: errors.append(e),
    })


def test_produce_and_group_consume_through_different_nodes(cluster):
    c = cluster
    topic, partitions, n = "py-spread", 12, 3000
    create_topic(c.nodes[0].bootstrap, topic, partitions)
    admin = AdminClient({"bootstrap.servers": c.nodes[2].bootstrap, "broker.address.family": "v4"})
    nodes, md = leaders_by_node(c, admin, topic)
    assert len(md.brokers) == NODES * CORES, md.brokers
    assert set(nodes.values()) == set(range(NODES)), f"leaders by node: {nodes}"

    errors, delivered = [], {}
    p = idempotent_producer(c.nodes[0].bootstrap, errors)
    for i in range(n):
        p.produce(topic, key=f"k{i}".encode(), value=f"v-{i}".encode(),
                  on_delivery=lambda err, msg, i=i: delivered.__setitem__(i, err))
        p.poll(0)
    assert p.flush(60) == 0
    assert all(e is None for e in delivered.values()) and len(delivered) == n, \
        [e for e in delivered.values() if e is not None][:3]

    consumer = group_consumer(c.nodes[1].bootstrap, "py-any-node")
    consumer.subscribe([topic])
    got = set()
    deadline = time.monotonic() + 60
    while len(got) < n and time.monotonic() < deadline:
        for m in consumer.consume(num_messages=1000, timeout=0.5):
            assert m.error() is None, m.error()
            got.add(int(m.value()[2:]))
    consumer.commit(asynchronous=False)
    committed = consumer.committed(consumer.assignment(), timeout=30)
    consumer.close()
    assert got == set(range(n))
    assert sum(tp.offset for tp in committed) == n
    assert not [e for e in errors if e.fatal()]


def test_kill9_during_idempotent_production_and_group_consumption(cluster):
    c = cluster
    topic, partitions, group = "py-failover", 6, "py-survivors"
    create_topic(c.nodes[0].bootstrap, topic, partitions)
    bootstrap = ",".join(k.bootstrap for k in c.nodes)
    errors, acked, failed = [], {}, {}
    consumed = set()
    stop = threading.Event()

    def consume():
        consumer = group_consumer(bootstrap, group)
        consumer.subscribe([topic])
        try:
            while not stop.is_set():
                msgs = consumer.consume(num_messages=1000, timeout=0.2)
                for m in msgs:
                    if m.error() is None:
                        consumed.add(int(m.value()[2:]))
                if msgs:
                    try:
                        consumer.commit(asynchronous=False)
                    except Exception:  # coordinator moving: the next commit covers it
                        pass
        finally:
            consumer.close()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    p = idempotent_producer(bootstrap, errors)

    def on_delivery(err, msg, seq):
        if err is not None:
            failed[seq] = err
        else:
            acked[seq] = (msg.partition(), msg.offset())

    try:
        for seq in range(0, 3000):
            p.produce(topic, partition=seq % partitions, value=f"v-{seq}".encode(),
                      on_delivery=lambda err, msg, seq=seq: on_delivery(err, msg, seq))
            p.poll(0.001 if seq % partitions == 0 else 0)
        assert p.flush(60) == 0
        admin = AdminClient({"bootstrap.servers": c.nodes[0].bootstrap, "broker.address.family": "v4"})
        nodes, _ = leaders_by_node(c, admin, topic)
        victim = 2
        moved = {part for part, node in nodes.items() if node == victim}
        killed = time.monotonic()
        c.nodes[victim].kill()
        first_after = {}

        def after_kill(err, msg, seq):
            on_delivery(err, msg, seq)
            if err is None and msg.partition() in moved:
                first_after.setdefault(msg.partition(), time.monotonic() - killed)

        for seq in range(3000, 9000):
            p.produce(topic, partition=seq % partitions, value=f"v-{seq}".encode(),
                      on_delivery=lambda err, msg, seq=seq: after_kill(err, msg, seq))
            p.poll(0.002 if seq % partitions == 0 else 0)
        assert p.flush(120) == 0
        print(f"kill -9 of node {victim} (partitions {sorted(moved)}): first ack on a moved partition after "
              f"{min(first_after.values(), default=-1):.2f} s (session {SESSION_MS / 1000} s)")
        assert not failed, f"{len(failed)} deliveries failed, e.g. {list(failed.items())[:3]}"
        assert not [e for e in errors if e.fatal()], errors
        assert len(acked) == 9000
        assert moved == set(first_after), f"moved {moved}, acknowledged after the kill {first_after}"

        survivor = c.nodes[0].bootstrap
        got, high = consume_all(survivor, topic, partitions)
        assert sum(high.values()) == 9000, f"high watermarks {high}: duplicates or loss"
        for part, msgs in got.items():
            for m in msgs:
                seq = int(m.value()[2:])
                assert acked[seq] == (part, m.offset()), f"v-{seq} at {part}@{m.offset()}, acked at {acked[seq]}"

        deadline = time.monotonic() + 60
        while len(consumed) < 9000 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert consumed == set(range(9000)), f"the group read {len(consumed)} of 9000"
    finally:
        stop.set()
        reader.join(30)
