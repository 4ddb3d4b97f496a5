"""Topic administration against kopd through confluent-kafka (librdkafka).

Run:  python3 -m pytest -q tests/python  (KOPD_BIN overrides the binary path)
"""
import os
import random
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[2]
KOPD_BIN = Path(os.environ.get("KOPD_BIN", REPO / "target" / "release" / "kopd"))
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0
REQ_TIMEOUT = 30.0


def free_ports(n):
    """First of n consecutive free TCP ports on 127.0.0.1."""
    for _ in range(200):
        base = random.randint(20000, 60000 - n)
        held = []
        try:
            for i in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports")


def wait_listening(proc, port, deadline, log_path):
    while True:
        if proc.poll() is not None:
            pytest.fail(f"kopd exited ({proc.returncode}) before listening on {port}\n"
                        + Path(log_path).read_text(errors="replace")[-4000:])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"kopd did not listen on 127.0.0.1:{port} within {START_TIMEOUT} s\n"
                            + Path(log_path).read_text(errors="replace")[-4000:])
            time.sleep(0.1)


@pytest.fixture(scope="module")
def kopd():
    if not (KOPD_BIN.is_file() and os.access(KOPD_BIN, os.X_OK)):
        pytest.fail(f"kopd binary not found at {KOPD_BIN} (cargo build --release, or set KOPD_BIN)")
    cores = 2
    port = free_ports(cores)
    with tempfile.TemporaryDirectory(prefix="kopd-py-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        log_path = Path(tmp) / "kopd.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [str(KOPD_BIN), "serve", "--listen", f"127.0.0.1:{port}",
                 "--cores", str(cores), "--data-dir", str(data_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            for i in range(cores):
                wait_listening(proc, port + i, deadline, log_path)
            yield {"port": port, "bootstrap": f"127.0.0.1:{port}"}
        finally:
            proc.terminate()  # SIGTERM
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
                pytest.fail(f"kopd did not exit within {STOP_TIMEOUT} s of SIGTERM")


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
