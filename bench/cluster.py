#!/usr/bin/env python3
"""A kopd cluster on BookKeeper: failover time and 3-node vs 1-node throughput.

  failover    3 nodes; an idempotent acks=all producer (confluent-kafka) writes every partition
              continuously; a node is killed with SIGKILL (each node in turn); measured: time from
              the kill to the first acknowledgement of a record sent after the kill on a partition
              the killed node led, and to the last such partition's first. The node is started again
              and takes its share back before the next run. Target on this machine: p50 under
              zookeeper.session.timeout.ms + 1 s.
  throughput  Kafka's ProducerPerformance (acks=all, 1 KiB records) bootstrapped from every node,
              against 1 node and against 3 nodes on the same ZooKeeper + 3 bookies (E/Qw/Qa 2/2/2,
              Pulsar's bookie settings, journal fsync on), alternating 1, 3, 1, 3...; reports the
              median records/s and latency of each and the 3/1 ratio. Target: >= 1x (the machine has
              2 cores: this shows the cluster path does not cost throughput; scaling waits for real
              hardware).

Everything runs on 127.0.0.1. A benchmark, not a test: no thresholds. Results go to
bench/results/<UTC time>-cluster.md and stdout.

    python3 bench/cluster.py                       # 9 failover runs, 2 throughput rounds (~6 min)
    python3 bench/cluster.py --failover-runs 3 --rounds 1 --records 100000   # quicker
"""
import argparse
import datetime as dt
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bk_target import BOOKIE_CONF, BOOKIE_GC  # noqa: E402
from compare import BIN, KOPD, ROOT, log, produce, run, wait_port  # noqa: E402

ZK_PORT = 25181
BOOKIE_PORT = 25182
NODE_PORTS = [25292, 25302, 25312]
TOPIC = "bench"  # compare.produce writes to this topic
CLIENT_NAMES = {"java": "Kafka Java producer 4.4.0", "rdkafka": "librdkafka (confluent-kafka)"}


class Bk:
    """ZooKeeper + 3 bookies from scripts/bookkeeper-cluster.sh."""

    def __init__(self, work, heap):
        self.dir = os.path.join(work, "bk")
        self.env = {**os.environ, "BK_HEAP": heap, "BK_GC_OPTS": BOOKIE_GC, "BK_CONF_EXTRA": BOOKIE_CONF}

    def script(self, *args, timeout=300):
        return run(["bash", os.path.join(ROOT, "scripts", "bookkeeper-cluster.sh"), *args, "--dir", self.dir],
                   timeout=timeout, env=self.env)

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        self.script("start", "--fresh", "--zk-port", str(ZK_PORT), "--bookies", "3", "--bookie-port",
                    str(BOOKIE_PORT), "--owner-pid", str(os.getpid()), "--wait-secs", "120")

    def stop(self):
        self.script("stop", timeout=180)


class Node:
    """One kopd node in cluster mode; restarts on the same data directory (same node id)."""

    def __init__(self, work, i, cores, session_ms, chroot):
        self.dir = os.path.join(work, f"node{i}")
        self.port = NODE_PORTS[i]
        self.cores = cores
        self.log = os.path.join(work, f"node{i}.log")
        self.proc = None
        self.sets = ["storage=bookkeeper", f"metadata.service.uri=zk+hierarchical://127.0.0.1:{ZK_PORT}/ledgers",
                     f"metadata.store=zk://127.0.0.1:{ZK_PORT}/{chroot}", f"cluster.name={chroot}",
                     f"zookeeper.session.timeout.ms={session_ms}", "admin.listen=",
                     "bookkeeper.ensemble.size=2", "bookkeeper.write.quorum=2", "bookkeeper.ack.quorum=2"]

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        cmd = [KOPD, "serve", "--listen", self.bootstrap, "--cores", str(self.cores), "--data-dir", self.dir]
        for s in self.sets:
            cmd += ["--set", s]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        for c in range(self.cores):
            if not wait_port(self.port + c, 60):
                raise RuntimeError(f"kopd node did not listen on {self.port + c}; see {self.log}")

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()

    def owns(self, port):
        return self.proc is not None and self.proc.poll() is None and self.port <= port < self.port + self.cores


def node_of(nodes, port):
    return next((i for i, n in enumerate(nodes) if n.owns(port)), -1)


def leaders(nodes, partitions, timeout=60):
    """partition -> index of the node leading it, once every partition has a live leader."""
    from confluent_kafka.admin import AdminClient

    live = [n for n in nodes if n.proc and n.proc.poll() is None]
    admin = AdminClient({"bootstrap.servers": ",".join(n.bootstrap for n in live), "broker.address.family": "v4"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = admin.list_topics(topic=TOPIC, timeout=20)
        t = md.topics.get(TOPIC)
        ports = {b.id: b.port for b in md.brokers.values()}
        if t is not None and t.error is None and len(t.partitions) == partitions:
            out = {p.id: node_of(nodes, ports.get(p.leader, -1)) for p in t.partitions.values()}
            if all(v >= 0 for v in out.values()):
                return out
        time.sleep(0.2)
    raise RuntimeError(f"{TOPIC}: not every partition has a live leader within {timeout} s")


def settled(nodes, partitions, timeout=60):
    """The leaders once load is even over the live nodes and unchanged for a second (a
    restarted node takes its share back in steps)."""
    deadline = time.monotonic() + timeout
    before = leaders(nodes, partitions)
    while time.monotonic() < deadline:
        time.sleep(1)
        now = leaders(nodes, partitions)
        counts = [list(now.values()).count(i) for i in range(len(nodes))]
        if now == before and max(counts) - min(counts) <= 1:
            return now
        before = now
    raise RuntimeError(f"leaders did not settle within {timeout} s")


def start_cluster(work, args, n, chroot):
    nodes = [Node(work, i, args.cores, args.session_ms, chroot) for i in range(n)]
    for node in nodes:
        node.start()
    run([f"{BIN}/kafka-topics.sh", "--bootstrap-server", nodes[0].bootstrap, "--create", "--topic", TOPIC,
         "--partitions", str(args.partitions)], timeout=60)
    leaders(nodes, args.partitions)
    return nodes


# An acknowledgement on a moved partition within this long after the kill answered a request
# the killed node had already handled (a delivery report can come late; no new owner can have
# the partition before the killed node's session expires, at least 2 s here); such acks do not
# count.
IN_FLIGHT_GRACE = 1.0
PRODUCER_SETTINGS = {"enable.idempotence": "true", "acks": "all", "linger.ms": "2",
                     "retry.backoff.ms": "50", "retry.backoff.max.ms": "200"}


class Load:
    """Idempotent acks=all production to every partition, every ack's partition and wall time
    recorded: by confluent-kafka (librdkafka) in this process, or by Kafka's Java producer
    (kafka-verifiable-producer.sh) in a child process."""

    def __init__(self, nodes, partitions, client, log_path):
        self.client = client
        self.partitions = partitions
        self.lock = threading.Lock()
        self.acks = []  # (partition, wall time)
        self.failed = []
        self.running = True
        bootstrap = ",".join(n.bootstrap for n in nodes)
        if client == "java":
            cfg = tempfile.NamedTemporaryFile("w", suffix=".properties", delete=False)
            cfg.write("".join(f"{k}={v}\n" for k, v in PRODUCER_SETTINGS.items()))
            # VerifiableProducer sets retries=0 unless told otherwise; idempotence needs them.
            cfg.write("retries=2147483647\nrequest.timeout.ms=5000\ndelivery.timeout.ms=120000\n")
            cfg.close()
            self.proc = subprocess.Popen(
                [f"{BIN}/kafka-verifiable-producer.sh", "--bootstrap-server", bootstrap, "--topic", TOPIC,
                 "--max-messages", "-1", "--throughput", str(200 * partitions), "--acks", "-1",
                 # Keyed, so every partition gets records all the time (not sticky batches).
                 "--repeating-keys", "1000",
                 "--producer.config", cfg.name], stdout=subprocess.PIPE, stderr=open(log_path, "w"), text=True)
            self.thread = threading.Thread(target=self.read_java, daemon=True)
        else:
            from confluent_kafka import Producer

            self.producer = Producer({"bootstrap.servers": bootstrap, "broker.address.family": "v4", "log_level": 2,
                                      "message.timeout.ms": 120000, **PRODUCER_SETTINGS})
            self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def read_java(self):
        import json

        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("name") == "producer_send_success":
                with self.lock:
                    self.acks.append((ev["partition"], ev["timestamp"] / 1000))
            elif ev.get("name") == "producer_send_error":
                self.failed.append(ev)

    def done(self, err, msg):
        if err is not None:
            self.failed.append(err)
        else:
            with self.lock:
                self.acks.append((msg.partition(), time.time()))

    def loop(self):
        while self.running:
            for p in range(self.partitions):
                self.producer.produce(TOPIC, partition=p, value=b"x" * 100, on_delivery=self.done)
            self.producer.poll(0.005)

    def check(self):
        if self.client == "java" and self.proc.poll() is not None:
            raise RuntimeError(f"the Java producer exited {self.proc.returncode}; see its log")

    def first_after(self, t, parts):
        """Seconds from wall time `t` to the first ack on each of `parts` (grace excluded)."""
        self.check()
        first = {}
        with self.lock:
            for p, at in self.acks:
                if at >= t + IN_FLIGHT_GRACE and p in parts and p not in first:
                    first[p] = at - t
        return first

    def close(self):
        self.running = False
        if self.client == "java":
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        else:
            self.thread.join(10)
            self.producer.flush(120)


def failover(args, work, client):
    os.makedirs(work)
    bk = Bk(work, args.bk_heap)
    bk.start()
    nodes = []
    firsts, alls = [], []
    try:
        nodes = start_cluster(work, args, 3, "failover")
        load = Load(nodes, args.partitions, client, os.path.join(work, "producer.log"))
        try:
            time.sleep(3)
            for r in range(args.failover_runs):
                victim = r % 3
                moved = {p for p, n in settled(nodes, args.partitions).items() if n == victim}
                t = time.time()
                nodes[victim].kill9()
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    first = load.first_after(t, moved)
                    if set(first) == moved:
                        break
                    time.sleep(0.05)
                else:
                    raise RuntimeError(f"run {r}: partitions {moved - set(first)} not acknowledged within 60 s")
                firsts.append(min(first.values()))
                alls.append(max(first.values()))
                killed_at = dt.datetime.fromtimestamp(t, dt.timezone.utc)
                log(f"failover run {r + 1} ({client}): node {victim} killed at {killed_at:%H:%M:%S.%f} (led {sorted(moved)}): first ack after "
                    f"{firsts[-1]:.2f} s, every moved partition within {alls[-1]:.2f} s")
                nodes[victim].start()
                deadline = time.monotonic() + 60
                while victim not in leaders(nodes, args.partitions).values():
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"node {victim} took no partition back within 60 s")
                    time.sleep(0.2)
        finally:
            load.close()
        if load.failed:
            raise RuntimeError(f"{len(load.failed)} deliveries failed: {load.failed[:3]}")
    finally:
        for n in nodes:
            n.kill9()
        bk.stop()
    return firsts, alls


def throughput(args, work):
    results = {1: [], 3: []}
    for r in range(args.rounds):
        for n in (1, 3):
            run_dir = os.path.join(work, f"tp-{r}-{n}")
            os.makedirs(run_dir)
            bk = Bk(run_dir, args.bk_heap)
            bk.start()
            nodes = []
            try:
                nodes = start_cluster(run_dir, args, n, f"tp{n}")
                boot = ",".join(x.bootstrap for x in nodes)
                res = produce(boot, args.records, args.size, -1, timeout=900)
                results[n].append(res)
                log(f"throughput round {r + 1}, {n} node(s): {res['rec_s']:.0f} rec/s, p99 {res['p99']:.0f} ms")
            finally:
                for x in nodes:
                    x.stop()
                bk.stop()
            shutil.rmtree(run_dir, ignore_errors=True)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--failover-runs", type=int, default=9)
    ap.add_argument("--clients", default="java,rdkafka", help="producers measuring failover: java, rdkafka")
    ap.add_argument("--rounds", type=int, default=2, help="throughput rounds (1 node then 3 nodes each)")
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--cores", type=int, default=1,
                    help="cores per kopd node (3 nodes x 1 core already oversubscribe a 2-CPU machine)")
    ap.add_argument("--session-ms", type=int, default=4000,
                    help="zookeeper.session.timeout.ms of the nodes (at least 2000: see IN_FLIGHT_GRACE)")
    ap.add_argument("--bk-heap", default="512m")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (node logs) and print it")
    ap.add_argument("--skip", choices=["failover", "throughput"], action="append", default=[])
    args = ap.parse_args()
    if args.session_ms < 2000:
        ap.error("--session-ms below 2000 is not measured correctly (see IN_FLIGHT_GRACE)")
    if not args.no_build:
        run(["cargo", "build", "--release", "--locked"], timeout=1800)
    run(["bash", os.path.join(ROOT, "scripts", "install-peers.sh")], timeout=1800)
    started = dt.datetime.now(dt.timezone.utc)
    lines = [f"# kopd cluster on BookKeeper, {started:%Y-%m-%d %H:%M} UTC", "",
             f"{os.cpu_count()} cores; ZooKeeper + 3 bookies (E/Qw/Qa 2/2/2, journal fsync on, Pulsar's bookie"
             f" settings) and every kopd node ({args.cores} core{'s' if args.cores > 1 else ''} each) on 127.0.0.1.", ""]
    work = tempfile.mkdtemp(prefix="kopd-bench-cluster-")
    try:
        if "failover" not in args.skip:
            target = args.session_ms / 1000 + 1
            lines += [f"## Failover: kill -9 -> first ack on a moved partition ({args.failover_runs} runs per "
                      f"client, session {args.session_ms} ms, {args.partitions} partitions)", "",
                      "The killed node is each node in turn; it is started again and takes its share back"
                      " between runs. Seconds from the kill:", "",
                      "| producer | first moved partition p50 | min | max | every moved partition p50 | max |",
                      "|---|---|---|---|---|---|"]
            verdicts = []
            for client in args.clients.split(","):
                firsts, alls = failover(args, os.path.join(work, f"failover-{client}"), client)
                p50 = statistics.median(firsts)
                lines.append(f"| {CLIENT_NAMES[client]} | {p50:.2f} | {min(firsts):.2f} | {max(firsts):.2f} | "
                             f"{statistics.median(alls):.2f} | {max(alls):.2f} |")
                verdicts.append(f"{CLIENT_NAMES[client]}: {'met' if p50 < target else 'NOT met'}")
            lines += ["", f"Target: p50 < session + 1 s = {target:.1f} s. " + "; ".join(verdicts) + ".", ""]
        if "throughput" not in args.skip:
            res = throughput(args, work)
            one = statistics.median(r["rec_s"] for r in res[1])
            three = statistics.median(r["rec_s"] for r in res[3])
            lines += [f"## Throughput: ProducerPerformance, acks=all, {args.records} x {args.size} B, "
                      f"{args.partitions} partitions, median of {args.rounds} round(s)", "",
                      "| | 1 node | 3 nodes | 3/1 |", "|---|---|---|---|",
                      f"| records/s | {one:.0f} | {three:.0f} | {three / one:.2f}x |"]
            for k in ("p50", "p99", "p99.9"):
                a = statistics.median(r[k] for r in res[1])
                b = statistics.median(r[k] for r in res[3])
                lines.append(f"| latency {k}, ms | {a:.0f} | {b:.0f} | {b / a if a else float('nan'):.2f}x |")
            lines += ["", f"Target: 3 nodes >= 1 node: {'met' if three >= one else 'NOT met'}.", ""]
    finally:
        if args.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report = "\n".join(lines)
    path = os.path.join(ROOT, "bench", "results", f"{started:%Y-%m-%dT%H%M%SZ}-cluster.md")
    with open(path, "w") as f:
        f.write(report)
    print(report)
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
