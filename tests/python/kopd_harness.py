"""Spawning kopd for the Python tests: start, SIGKILL, SIGTERM, restart on the same ports/data."""
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KOPD_BIN = Path(os.environ.get("KOPD_BIN", REPO / "target" / "release" / "kopd"))
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0


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


def backend_settings(data_dir):
    """Settings that put kopd on the suite's backend: KOPD_TEST_STORAGE=bookkeeper (with
    KOPD_TEST_ZK of a running ZooKeeper + bookies) runs the same tests on BookKeeper. Each data
    directory gets its own ZooKeeper chroot, as in tests/common/mod.rs."""
    if os.environ.get("KOPD_TEST_STORAGE", "local") != "bookkeeper":
        return {}
    zk = os.environ.get("KOPD_TEST_ZK", "127.0.0.1:2181")
    e, w, a = (os.environ.get("KOPD_TEST_BK_QUORUMS", "2/2/2").split("/") + ["2", "2", "2"])[:3]
    flat = "".join(c if c.isalnum() or c == "-" else "_" for c in str(Path(data_dir).resolve()))
    return {
        "storage": "bookkeeper",
        "metadata.service.uri": f"zk+hierarchical://{zk}/ledgers",
        "metadata.store": f"zk://{zk}/kopd-tests/{flat}",
        "bookkeeper.ensemble.size": e,
        "bookkeeper.write.quorum": w,
        "bookkeeper.ack.quorum": a,
    }


class Kopd:
    """One kopd process; `start()` may be called again after `kill()`/`stop()` (same ports, same data)."""

    def __init__(self, workdir, cores=2, port=None, settings=None):
        if not (KOPD_BIN.is_file() and os.access(KOPD_BIN, os.X_OK)):
            pytest.fail(f"kopd binary not found at {KOPD_BIN} (cargo build --release, or set KOPD_BIN)")
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.cores = cores
        self.port = port if port is not None else free_ports(cores)
        self.settings = dict(settings or {})
        self.proc = None
        self.starts = 0
        self.log_path = self.workdir / "kopd.log"

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def log_tail(self, chars=4000):
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError as e:
            return f"(no log: {e})"

    def start(self):
        assert self.proc is None or self.proc.poll() is not None, "kopd already running"
        self.starts += 1
        cmd = [str(KOPD_BIN), "serve", "--listen", f"127.0.0.1:{self.port}",
               "--cores", str(self.cores), "--data-dir", str(self.data_dir)]
        for k, v in {**backend_settings(self.data_dir), **self.settings}.items():
            cmd += ["--set", f"{k}={v}"]
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        for i in range(self.cores):
            self._wait_listening(self.port + i, deadline)
        return self

    def _wait_listening(self, port, deadline):
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"kopd exited ({self.proc.returncode}) before listening on {port} "
                            f"(start #{self.starts})\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"kopd did not listen on 127.0.0.1:{port} within {START_TIMEOUT} s "
                                f"(start #{self.starts})\n{self.log_tail()}")
                time.sleep(0.05)

    def kill(self):
        """SIGKILL and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self):
        """SIGTERM; returns the exit status (SIGKILLs and fails if it does not exit in time)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"kopd did not exit within {STOP_TIMEOUT} s of SIGTERM\n{self.log_tail()}")

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()


def create_topic(bootstrap, name, partitions, timeout=30.0):
    """Creates a topic and waits until its metadata shows every partition with a leader."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4"})
    fs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                             operation_timeout=10, request_timeout=timeout)
    fs[name].result(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(topic=name, timeout=timeout)
        t = md.topics.get(name)
        if (t is not None and t.error is None and len(t.partitions) == partitions
                and all(p.leader >= 0 for p in t.partitions.values())):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"topic {name} not ready: {t and t.partitions}")
        time.sleep(0.1)


def consume_all(bootstrap, topic, partitions, timeout=60.0, extra=None):
    """Reads every partition of `topic` from the beginning up to its high watermark with
    assign() (no consumer group). Returns {partition: [Message, ...]} in offset order."""
    from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING

    conf = {
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "group.id": "unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "check.crcs": True,
        "fetch.error.backoff.ms": 100,
    }
    conf.update(extra or {})
    c = Consumer(conf)
    try:
        deadline = time.monotonic() + timeout
        high = {}
        for p in range(partitions):
            _, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30, cached=False)
            high[p] = hi
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        got = {p: [] for p in range(partitions)}
        nxt = {p: None for p in range(partitions)}

        def done():
            return all(high[p] == 0 or (nxt[p] is not None and nxt[p] >= high[p]) for p in range(partitions))

        while not done():
            if time.monotonic() > deadline:
                pytest.fail(f"consume_all({topic}) timed out: next offsets {nxt}, high watermarks {high}")
            for m in c.consume(num_messages=10000, timeout=0.5):
                if m.error():
                    pytest.fail(f"consumer error on {topic}: {m.error()}")
                got[m.partition()].append(m)
                nxt[m.partition()] = m.offset() + 1
        return got, high
    finally:
        c.close()
