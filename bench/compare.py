#!/usr/bin/env python3
"""Side-by-side benchmark of kopd and Apache Kafka 4.4.0 (KRaft, single node) on the same disk.

Runs every workload against both brokers alternately (Kafka, kopd, Kafka, kopd, ...), each run on a
freshly started broker with an empty data directory, and writes bench/results/<UTC time>.md (medians
and ratios kopd/Kafka) plus a PNG of producer latency percentiles next to it.

Workloads, per durability mode ("fsync": Kafka log.flush.interval.messages=1, kopd flush=always;
"no-fsync": Kafka defaults, kopd flush=interval):
  produce-max   Kafka's ProducerPerformance, --throughput -1 (records/s, MB/s, latency percentiles)
  produce-50%   ProducerPerformance at 50% of Kafka's max measured in the same round and mode
  consume       bench/loadgen --drain reading every partition from the beginning to the end (records/s, MB/s)
  consume-cold  the same after a broker restart with the OS page cache dropped: reads from disk
  e2e           Kafka's EndToEndLatency (assigned single-partition consumer, one record at a time)
  loadgen-max   bench/loadgen (librdkafka + HdrHistogram): 1 producer + 1 tail consumer, unthrottled:
                records/s, produce (send->ack) and end-to-end (send->consume) latency in microseconds
  loadgen-50%   the same at 50% of Kafka's loadgen-max in the same round and mode
Peak RSS (VmHWM) of each broker process (the java process for Kafka).

kopd backends (--backends): `local` (embedded ledger store) and, in fsync mode only, kopd on Apache
BookKeeper (bench/bk_target.py): `bk111` (1 bookie, ensemble/write/ack quorum 1/1/1) and `bk322`
(3 bookies, 3/2/2), each run on a fresh local cluster (scripts/bookkeeper-cluster.sh: ZooKeeper +
bookies with journal fsync on, data on the same disk); kopd's metadata in that ZooKeeper.

    bench/compare.py [--records N] [--size BYTES] [--partitions P] [--rounds R]
                     [--latency-seconds S] [--e2e-records N] [--cores C] [--quick] [--no-build]
                     [--no-loadgen] [--loadgen-seconds S] [--loadgen-warmup S] [--modes fsync,no-fsync]
                     [--no-cold] [--backends local,bk111,bk322] [--bk-heap SIZE]
"""
import argparse
import datetime as dt
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import bk_target

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".peers", "bin")
KAFKA_SERVER = os.path.join(ROOT, "scripts", "kafka-server.sh")
KOPD = os.path.join(ROOT, "target", "release", "kopd")
# Below the ephemeral range (32768+), where a client socket could hold them; Kafka's controller
# listens on KAFKA_PORT + 1000 (scripts/kafka-server.sh).
KAFKA_PORT = 19092
KOPD_PORT = 29192
TOPIC = "bench"
E2E_TOPIC = "e2e"
LG_TOPIC = "lg"
LOADGEN_DIR = os.path.join(ROOT, "bench", "loadgen")
LOADGEN = os.path.join(LOADGEN_DIR, "target", "release", "kopd-loadgen")
# Same producer settings for both brokers (those of bench/throughput.sh).
PRODUCER_PROPS = ["linger.ms=5", "batch.size=262144"]
MODES = {
    # mode: (Kafka extra server properties, kopd --set values)
    "fsync": (["log.flush.interval.messages=1"], ["flush=always"]),
    "no-fsync": ([], ["flush=interval"]),
}


def log(msg):
    print(f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def run(cmd, timeout, check=True, **kw):
    p = subprocess.run(cmd, cwd=ROOT, timeout=timeout, text=True, capture_output=True, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {p.returncode}: {p.stderr[-2000:]}")
    return p


def wait_port(port, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def wait_free(ports, seconds):
    """Waits (bounded) until every port can be bound: a broker just stopped may still hold one."""
    deadline = time.monotonic() + seconds
    for port in ports:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"port {port} is still in use")
                    time.sleep(0.2)


def peak_rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Kafka:
    name = "Kafka"

    def __init__(self, work, mode):
        self.dir = os.path.join(work, f"kafka-{mode}-{time.monotonic_ns()}")
        self.props = MODES[mode][0]
        self.boot = f"127.0.0.1:{KAFKA_PORT}"

    def start(self):
        wait_free([KAFKA_PORT, KAFKA_PORT + 1000], 60)
        run([KAFKA_SERVER, "start", self.dir, str(KAFKA_PORT), *self.props], timeout=120)
        with open(os.path.join(self.dir, "kafka.pid")) as f:
            self.pid = int(f.read().strip())

    def restart(self):
        """Stops and starts again on the same data (the log dirs are kept)."""
        run([KAFKA_SERVER, "stop", self.dir], timeout=60, check=False)
        self.start()

    def stop(self):
        run([KAFKA_SERVER, "stop", self.dir], timeout=60, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


class Kopd:
    name = "kopd"

    def __init__(self, work, mode, cores):
        self.name = "kopd"
        self.dir = os.path.join(work, f"kopd-{mode}-{time.monotonic_ns()}")
        self.sets = MODES[mode][1]
        self.cores = cores
        self.boot = f"127.0.0.1:{KOPD_PORT}"
        self.proc = None

    def start(self):
        wait_free([KOPD_PORT + i for i in range(self.cores or os.cpu_count() or 1)], 60)
        os.makedirs(self.dir, exist_ok=True)
        cmd = [KOPD, "serve", "--listen", self.boot, "--cores", str(self.cores), "--data-dir",
               os.path.join(self.dir, "data")]
        for s in self.sets:
            cmd += ["--set", s]
        self.out = open(os.path.join(self.dir, "kopd.out"), "w")
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT,
                                     env={**os.environ, "RUST_LOG": "warn"})
        self.pid = self.proc.pid
        if not wait_port(KOPD_PORT, 30):
            self.stop()
            raise RuntimeError("kopd did not open its port in 30 s")

    def restart(self):
        """SIGTERM, then start again on the same data directory."""
        self.halt()
        self.start()

    def halt(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc:
            self.out.close()

    def stop(self):
        self.halt()
        shutil.rmtree(self.dir, ignore_errors=True)


PERF_RE = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th")


def produce(boot, records, size, rate, timeout):
    cmd = [f"{BIN}/kafka-producer-perf-test.sh", "--topic", TOPIC, "--num-records", str(records),
           "--record-size", str(size), "--throughput", str(rate), "--producer-props",
           f"bootstrap.servers={boot}", "acks=all", *PRODUCER_PROPS]
    p = run(cmd, timeout=timeout)
    m = None
    for line in p.stdout.splitlines():
        m = PERF_RE.search(line) or m
    if not m:
        raise RuntimeError(f"no ProducerPerformance summary in: {p.stdout[-1000:]} {p.stderr[-1000:]}")
    sent = int(m.group(1))
    if sent != records:
        raise RuntimeError(f"ProducerPerformance sent {sent} of {records}")
    return {"rec_s": float(m.group(2)), "mb_s": float(m.group(3)), "avg": float(m.group(4)),
            "max": float(m.group(5)), "p50": float(m.group(6)), "p95": float(m.group(7)),
            "p99": float(m.group(8)), "p99.9": float(m.group(9))}


def cpu_seconds(pid):
    """User + system CPU seconds a process has used so far (NaN if it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15 of stat; [0] here is field 3 (the state).
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def with_cpu(broker_pid, client):
    """Runs `client` (which runs one client process to its end) and returns its result with the
    broker's and the client's CPU over that time, in cores (CPU seconds per second): brokers
    and clients share this machine's cores, so these show which side limits a figure."""
    broker_before = cpu_seconds(broker_pid)
    client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = client()
    wall = max(time.monotonic() - started, 1e-9)
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["broker_cpu"] = (cpu_seconds(broker_pid) - broker_before) / wall
    result["client_cpu"] = (client_after.ru_utime + client_after.ru_stime
                            - client_before.ru_utime - client_before.ru_stime) / wall
    return result


def consume(boot, expect, size, timeout):
    # The loadgen's drain mode (librdkafka, nothing printed per record): kcat, printing every
    # record into a pipe, was the limit at 300-800k records/s, not the broker.
    p = subprocess.run([LOADGEN, "--brokers", boot, "--topic", TOPIC, "--drain", str(expect),
                        "--drain-timeout", str(timeout), "--json"],
                       cwd=ROOT, timeout=timeout + 30, capture_output=True, text=True)
    try:
        r = json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"drain printed no result (rc {p.returncode}): {p.stderr[-500:]!r}")
    if r["records"] != expect:
        raise RuntimeError(f"drain read {r['records']} of {expect} records (rc {p.returncode}): {p.stderr[-500:]!r}")
    return {"rec_s": r["records_per_s"], "mb_s": expect * size / r["secs"] / 1048576}


def drop_page_cache():
    """Writes back and drops the OS page cache (needs root); True if it was dropped."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError as e:
        log(f"cannot drop the page cache ({e}); cold consume reads what is still cached")
        return False


E2E_RE = re.compile(r"Avg latency: ([\d.]+) ms.*?50th = (\d+), 99th = (\d+), 99.9th = (\d+)", re.S)


def e2e(boot, records, size, timeout):
    p = run([f"{BIN}/kafka-e2e-latency.sh", boot, E2E_TOPIC, str(records), "all", str(size)],
            timeout=timeout)
    m = E2E_RE.search(p.stdout)
    if not m:
        raise RuntimeError(f"no EndToEndLatency summary in: {p.stdout[-500:]} {p.stderr[-500:]}")
    return {"avg": float(m.group(1)), "p50": float(m.group(2)), "p99": float(m.group(3)),
            "p99.9": float(m.group(4))}


def loadgen(boot, args, rate):
    p = run([LOADGEN, "--brokers", boot, "--topic", LG_TOPIC, "--size", str(args.size), "--acks", "all",
             "--rate", str(rate), "--duration", str(args.loadgen_seconds), "--warmup", str(args.loadgen_warmup),
             "--linger-ms", "5", "--batch-size", "262144", "--json"], timeout=args.timeout)
    r = json.loads(p.stdout.strip().splitlines()[-1])
    out = {"rec_s": r["records_per_s"], "mb_s": r["mb_per_s"], "rate": rate}
    for k, v in r["produce_ms"].items():
        out[k] = v
    for k, v in r["e2e_ms"].items():
        out["e2e " + k] = v
    return out


def create_topic(boot, topic, partitions):
    run([f"{BIN}/kafka-topics.sh", "--bootstrap-server", boot, "--create", "--topic", topic,
         "--partitions", str(partitions)], timeout=60)


def one_run(broker, args, rate, lg_rate):
    """One broker instance: produce max, produce at `rate` (if known), consume, e2e, RSS."""
    out = {}
    broker.start()
    try:
        create_topic(broker.boot, TOPIC, args.partitions)
        create_topic(broker.boot, E2E_TOPIC, 1)
        if args.loadgen:
            create_topic(broker.boot, LG_TOPIC, args.partitions)
        out["produce-max"] = with_cpu(broker.pid, lambda: produce(broker.boot, args.records, args.size, -1,
                                                                    args.timeout))
        rate = rate or max(1, int(out["produce-max"]["rec_s"] / 2))
        n_rate = max(100, min(args.records, int(rate * args.latency_seconds)))
        out["produce-50%"] = produce(broker.boot, n_rate, args.size, rate, args.timeout)
        out["produce-50%"]["rate"] = rate
        out["consume"] = with_cpu(broker.pid, lambda: consume(broker.boot, args.records + n_rate, args.size,
                                                                args.timeout))
        out["e2e"] = e2e(broker.boot, args.e2e_records, args.size, args.timeout)
        if args.loadgen:
            out["loadgen-max"] = with_cpu(broker.pid, lambda: loadgen(broker.boot, args, 0))
            lg_rate = lg_rate or max(1, int(out["loadgen-max"]["rec_s"] / 2))
            out["loadgen-50%"] = loadgen(broker.boot, args, lg_rate)
        out["rss_mib"] = peak_rss_mib(broker.pid)
        if hasattr(broker, "aux_rss_mib"):
            out["aux_rss_mib"] = broker.aux_rss_mib()
        if args.cold:
            # From disk: a restarted broker has no tail cache, and the page cache is dropped.
            broker.restart()
            out["cold_dropped"] = drop_page_cache()
            out["consume-cold"] = consume(broker.boot, args.records + n_rate, args.size, args.timeout)
    finally:
        broker.stop()
    return out, rate, lg_rate


def med(vals):
    vals = [v for v in vals if v == v]
    return statistics.median(vals) if vals else float("nan")


# Latency figures checked for a hiccup round: (workload, metric).
HICCUP_CHECKS = [("produce-50%", "p99"), ("loadgen-50%", "p99"), ("loadgen-50%", "e2e p99")]
HICCUP_FACTOR = 5


def hiccups(runs):
    """Per run (index), the latency figures more than HICCUP_FACTOR x off the same broker's other
    rounds: one stall must not decide a ratio unseen."""
    flags = {}
    for wl, metric in HICCUP_CHECKS:
        vals = [x[wl][metric] if wl in x else float("nan") for x in runs]
        whole = med(vals)
        for i, v in enumerate(vals):
            # With 3 or more rounds the median of all is the round's reference (one stall cannot
            # move it); with two, each is held against the other (either may be the odd one).
            others = whole if sum(1 for x in vals if x == x) >= 3 else med(vals[:i] + vals[i + 1:])
            if v == v and others == others and others > 0 and (v > others * HICCUP_FACTOR or v * HICCUP_FACTOR < others):
                flags.setdefault(i, []).append(f"{wl} {metric} {v:g} ms vs {others:g} ms over its rounds")
    return flags


def fmt(v):
    if v != v:
        return "n/a"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-seconds", type=float, default=20,
                    help="length of the fixed-rate run (records = rate x seconds, at most --records)")
    ap.add_argument("--e2e-records", type=int, default=1000)
    ap.add_argument("--no-loadgen", dest="loadgen", action="store_false",
                    help="skip the bench/loadgen (rdkafka) workloads")
    ap.add_argument("--no-cold", dest="cold", action="store_false",
                    help="skip the consume after a restart with the page cache dropped")
    ap.add_argument("--loadgen-seconds", type=float, default=10)
    ap.add_argument("--loadgen-warmup", type=float, default=2)
    ap.add_argument("--cores", type=int, default=0, help="kopd cores (0 = all)")
    ap.add_argument("--modes", default="fsync,no-fsync")
    ap.add_argument("--backends", default="local",
                    help="kopd targets, comma-separated: local, " + ", ".join(bk_target.BACKENDS)
                    + " (BookKeeper targets run in fsync mode only)")
    ap.add_argument("--bk-heap", default="1g",
                    help="heap and direct memory of each bookie JVM (Kafka gets -Xmx1g)")
    ap.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    ap.add_argument("--no-build", action="store_true", help="use target/release/kopd as it is")
    ap.add_argument("--timeout", type=int, default=600, help="bound on any single client run, s")
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--tag", default="", help="appended to the results file's name (bench/sweep.py names its runs)")
    args = ap.parse_args()
    if args.quick:
        args.records, args.latency_seconds, args.e2e_records, args.rounds = 20_000, 2, 200, 1
        args.loadgen_seconds, args.loadgen_warmup = 2, 0.5
        args.timeout = 120
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m}")
    backends = [b for b in args.backends.split(",") if b]
    for b in backends:
        if b != "local" and b not in bk_target.BACKENDS:
            ap.error(f"unknown backend {b}")
    if not backends:
        ap.error("no backend")
    # Column order: Kafka, then the kopd targets; a BookKeeper target only where its mode is fsync.
    names = ["kopd" if b == "local" else f"kopd-{b}" for b in backends]
    KopdBk = bk_target.bk_target(Kopd, ROOT, wait_free, peak_rss_mib)

    def targets(mode):
        for b in backends:
            if b == "local":
                yield lambda work: Kopd(work, mode, args.cores)
            elif mode == "fsync":
                yield lambda work, b=b: KopdBk(work, mode, args.cores, b, args.bk_heap)

    started = time.monotonic()
    run(["bash", "scripts/install-peers.sh"], timeout=1800)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log("installing matplotlib")
        run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], timeout=600)
    if not args.no_build:
        log("cargo build --release")
        run(["cargo", "build", "--release", "--locked", "-q"], timeout=1800)
    # Always: besides the loadgen workloads it measures consume (its drain mode).
    log("cargo build --release (bench/loadgen)")
    run(["cargo", "build", "--release", "--manifest-path", os.path.join(LOADGEN_DIR, "Cargo.toml"), "-q"],
        timeout=1800)
    if not os.access(KOPD, os.X_OK):
        sys.exit(f"{KOPD} missing")
    ports = [KAFKA_PORT, KAFKA_PORT + 1000, KOPD_PORT]
    if backends != ["local"]:
        ports += [bk_target.ZK_PORT, bk_target.BOOKIE_PORT, bk_target.BOOKIE_PORT + 1, bk_target.BOOKIE_PORT + 2]
    for port in ports:
        if wait_port(port, 0.2):
            sys.exit(f"port {port} already in use")

    # results[mode][broker] = list of per-run dicts
    results = {m: {n: [] for n in ["Kafka"] + names} for m in modes}
    work = tempfile.mkdtemp(prefix="kopd-compare.", dir="/tmp")  # one disk for both brokers
    try:
        for mode in modes:
            for r in range(args.rounds):
                rate = lg_rate = None  # 50% of Kafka's max in this round: Kafka runs first
                for make in [lambda work: Kafka(work, mode)] + list(targets(mode)):
                    b = make(work)
                    log(f"{mode} round {r + 1}/{args.rounds}: {b.name}")
                    res, rate, lg_rate = one_run(b, args, rate, lg_rate)
                    results[mode][b.name].append(res)
                    pm, pr = res["produce-max"], res["produce-50%"]
                    log(f"  max {pm['rec_s']:.0f} rec/s p99 {pm['p99']} ms; at {pr['rate']}/s "
                        f"p99 {pr['p99']} p99.9 {pr['p99.9']} ms; consume {res['consume']['rec_s']:.0f} rec/s; "
                        f"e2e p99 {res['e2e']['p99']} ms; RSS {res['rss_mib']:.0f} MiB"
                        + (f" (+ {res['aux_rss_mib']:.0f} MiB ZooKeeper and bookies)" if "aux_rss_mib" in res else "")
                        + (f"; from disk {res['consume-cold']['rec_s']:.0f} rec/s" if "consume-cold" in res else ""))
                    if args.loadgen:
                        lm, lr = res["loadgen-max"], res["loadgen-50%"]
                        log(f"  loadgen max {lm['rec_s']:.0f} rec/s; at {lr['rate']}/s p99 {lr['p99']} "
                            f"p99.9 {lr['p99.9']} ms, e2e p99 {lr['e2e p99']} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started
    write_report(args, modes, names, results, elapsed)


ROWS = [
    # (label, workload, metric, higher is better)
    ("produce max, records/s", "produce-max", "rec_s", True),
    ("produce max, MB/s", "produce-max", "mb_s", True),
    ("produce max, p50 ms", "produce-max", "p50", False),
    ("produce max, p99 ms", "produce-max", "p99", False),
    ("produce max, broker CPU (cores)", "produce-max", "broker_cpu", False),
    ("produce max, client CPU (cores)", "produce-max", "client_cpu", False),
    ("produce at 50% of Kafka max, records/s", "produce-50%", "rec_s", True),
    ("produce at 50%, p50 ms", "produce-50%", "p50", False),
    ("produce at 50%, p99 ms", "produce-50%", "p99", False),
    ("produce at 50%, p99.9 ms", "produce-50%", "p99.9", False),
    ("consume from beginning, records/s", "consume", "rec_s", True),
    ("consume from beginning, MB/s", "consume", "mb_s", True),
    ("consume from beginning, broker CPU (cores)", "consume", "broker_cpu", False),
    ("consume from beginning, client CPU (cores)", "consume", "client_cpu", False),
    ("e2e (1 partition), p50 ms", "e2e", "p50", False),
    ("e2e (1 partition), p99 ms", "e2e", "p99", False),
    ("e2e (1 partition), p99.9 ms", "e2e", "p99.9", False),
]
LOADGEN_ROWS = [
    ("loadgen max, records/s", "loadgen-max", "rec_s", True),
    ("loadgen max, MB/s", "loadgen-max", "mb_s", True),
    ("loadgen max, produce p99 ms", "loadgen-max", "p99", False),
    ("loadgen max, broker CPU (cores)", "loadgen-max", "broker_cpu", False),
    ("loadgen max, client CPU (cores)", "loadgen-max", "client_cpu", False),
    ("loadgen at 50% of Kafka max, records/s", "loadgen-50%", "rec_s", True),
    ("loadgen at 50%, produce p50 ms", "loadgen-50%", "p50", False),
    ("loadgen at 50%, produce p99 ms", "loadgen-50%", "p99", False),
    ("loadgen at 50%, produce p99.9 ms", "loadgen-50%", "p99.9", False),
    ("loadgen at 50%, e2e p50 ms", "loadgen-50%", "e2e p50", False),
    ("loadgen at 50%, e2e p99 ms", "loadgen-50%", "e2e p99", False),
    ("loadgen at 50%, e2e p99.9 ms", "loadgen-50%", "e2e p99.9", False),
]


COLD_ROWS = [
    ("consume from disk (restarted, page cache dropped), records/s", "consume-cold", "rec_s", True),
    ("consume from disk, MB/s", "consume-cold", "mb_s", True),
]


AUX_RSS_LABEL = "peak RSS of ZooKeeper + bookies (sum), MiB"


def value(res, wl, metric):
    if wl is None:
        return res.get(metric, float("nan"))
    return res[wl][metric]


def table_lines(args, modes, names, results):
    """Medians per mode and workload, one column per broker, each kopd target with its ratio to Kafka."""
    kopds = names
    head = "| mode | workload | Kafka |" + "".join(
        f" {n} | {'kopd' if n == 'kopd' else n.removeprefix('kopd-')}/Kafka |" for n in kopds)
    lines = [head, "|---|---|---:|" + "---:|---:|" * len(kopds)]
    rows = ROWS + (COLD_ROWS if args.cold else []) + (LOADGEN_ROWS if args.loadgen else []) + [
        ("peak RSS (VmHWM), MiB", None, "rss_mib", False)]
    if any(n != "kopd" for n in names):
        rows.append((AUX_RSS_LABEL, None, "aux_rss_mib", False))
    for mode in modes:
        for label, wl, metric, _ in rows:
            if metric == "aux_rss_mib" and not any(results[mode][n] for n in names if n != "kopd"):
                continue
            k = med([value(x, wl, metric) for x in results[mode]["Kafka"]])
            cells = ""
            for n in kopds:
                # A target that does not run in this mode, or has no such figure.
                if not results[mode][n] or (metric == "aux_rss_mib" and n == "kopd"):
                    cells += " - | - |"
                    continue
                o = med([value(x, wl, metric) for x in results[mode][n]])
                ratio = o / k if k and k == k and o == o else float("nan")
                cells += f" {fmt(o)} | {'-' if metric == 'aux_rss_mib' else fmt(ratio) if ratio == ratio else 'n/a'} |"
            lines.append(f"| {mode} | {label} | {'-' if metric == 'aux_rss_mib' else fmt(k)} |{cells}")
    return lines


def write_report(args, modes, names, results, elapsed):
    now = dt.datetime.now(dt.timezone.utc)
    stamp = now.strftime("%Y-%m-%dT%H%M%SZ")
    os.makedirs(args.out_dir, exist_ok=True)
    tag = "".join(c for c in args.tag if c.isalnum() or c in "-_")
    md_path = os.path.join(args.out_dir, f"{stamp}{'-quick' if args.quick else ''}{'-' + tag if tag else ''}.md")
    png_path = md_path[:-3] + ".png"
    kver = run(["git", "rev-parse", "--short", "HEAD"], timeout=10, check=False).stdout.strip()
    table = "\n".join(table_lines(args, modes, names, results))
    ncpu = os.cpu_count()
    with open("/proc/meminfo") as f:
        mem_gib = int(f.readline().split()[1]) / 1048576
    header = f"""# kopd vs Apache Kafka 4.4.0, {now:%Y-%m-%d %H:%M} UTC{' (quick smoke run: figures are not meaningful)' if args.quick else ''}

Generated by `bench/compare.py{' --quick' if args.quick else ''}` at commit {kver or '?'} (plus uncommitted changes, if any).
Machine: {ncpu} CPUs, {mem_gib:.0f} GiB RAM; brokers and clients on the same host, data of both under /tmp (same disk).
Run took {elapsed / 60:.1f} min.

Settings: {args.records:,} records of {args.size} B, {args.partitions} partitions, acks=all, producer
`{' '.join(PRODUCER_PROPS)}`; {args.rounds} round(s) per mode, brokers alternated Kafka, kopd, Kafka, kopd,
each run on a fresh broker with empty storage; table cells are medians over rounds.
kopd: `--cores {args.cores or 'all'}`. Kafka: single node KRaft (broker+controller), heap `-Xmx1g -Xms1g`
(Kafka's stock default), G1.

- fsync: Kafka `log.flush.interval.messages=1`, kopd `flush=always` (ack after fdatasync).
- no-fsync: Kafka defaults (no explicit flush), kopd `flush=interval` (fdatasync every `flush.interval.ms`, 200 ms by default).
- produce max: Kafka's ProducerPerformance `--throughput -1`; latency is send -> ack.
- produce at 50%: ProducerPerformance `--throughput` = half of Kafka's max in the same round and mode,
  for {args.latency_seconds:g} s (at most {args.records:,} records).
- consume: bench/loadgen `--drain` (librdkafka, one consumer assigned every partition, nothing printed per
  record; until 2026-11-27 kcat, which was the limit) reading all partitions from the beginning to the end
  (the records of both produce runs; mostly served from memory: OS page cache for Kafka, tail cache/page
  cache for kopd). Timed from the client's start, so connection and metadata are included.
- consume from disk (unless `--no-cold`): after the other workloads, the broker is restarted on the same
  data and the OS page cache dropped (`/proc/sys/vm/drop_caches`; kopd's tail cache is empty after a
  restart), then the drain reads everything from the beginning again. Peak RSS is taken before the restart.
- e2e: Kafka's EndToEndLatency, {args.e2e_records:,} records of {args.size} B, one at a time, 1-partition
  topic, consumer by assign (its millisecond percentiles are integers).
- loadgen (unless `--no-loadgen`): bench/loadgen (librdkafka via rdkafka, HdrHistogram, us resolution),
  1 producer + 1 tail consumer (assign, no group), acks=all, {args.loadgen_warmup:g} s warm-up then
  {args.loadgen_seconds:g} s measured; unthrottled, then at 50% of Kafka's unthrottled rate of the same round.
- Ratios are kopd/Kafka: > 1 is better for throughput, < 1 is better for latency and RSS.
{bk_target.notes(names, args.bk_heap)}
"""
    per_run = ["", "## Per-run figures", "",
               f"A run marked HICCUP has a latency figure more than {HICCUP_FACTOR}x off the same broker's "
               "other rounds (the median of all its rounds with 3 or more; the other round with 2); with 3 or "
               "more rounds the table's medians keep one such round from deciding a ratio.", ""]
    for mode in modes:
        for b in ["Kafka"] + names:
            flags = hiccups(results[mode][b])
            for i, x in enumerate(results[mode][b]):
                pm, pr, c, e = x["produce-max"], x["produce-50%"], x["consume"], x["e2e"]
                per_run.append(
                    f"- {mode} {b} #{i + 1}: max {pm['rec_s']:,.0f} rec/s ({pm['mb_s']:.1f} MB/s, p50/p99/p99.9 "
                    f"{pm['p50']:g}/{pm['p99']:g}/{pm['p99.9']:g} ms); at {pr['rate']:,}/s p50/p99/p99.9 "
                    f"{pr['p50']:g}/{pr['p99']:g}/{pr['p99.9']:g} ms; consume {c['rec_s']:,.0f} rec/s; "
                    f"e2e p50/p99/p99.9 {e['p50']:g}/{e['p99']:g}/{e['p99.9']:g} ms; RSS {x['rss_mib']:.0f} MiB")
                if "aux_rss_mib" in x:
                    per_run[-1] += f" (ZooKeeper + bookies {x['aux_rss_mib']:.0f} MiB)"
                if "consume-cold" in x:
                    per_run[-1] += (f"; consume from disk {x['consume-cold']['rec_s']:,.0f} rec/s"
                                    f"{'' if x.get('cold_dropped') else ' (page cache not dropped)'}")
                if "loadgen-max" in x:
                    lm, lr = x["loadgen-max"], x["loadgen-50%"]
                    per_run[-1] += (
                        f"; loadgen max {lm['rec_s']:,.0f} rec/s, at {lr['rate']:,}/s produce p50/p99/p99.9 "
                        f"{lr['p50']:g}/{lr['p99']:g}/{lr['p99.9']:g} ms, e2e {lr['e2e p50']:g}/{lr['e2e p99']:g}/"
                        f"{lr['e2e p99.9']:g} ms")
                if i in flags:
                    per_run[-1] += " — HICCUP: " + "; ".join(flags[i])
    plot(modes, names, results, png_path, args.loadgen)
    with open(md_path, "w") as f:
        f.write(header + table + "\n\n" + f"![latency percentiles]({os.path.basename(png_path)})\n"
                + "\n".join(per_run) + "\n")
    print(table)
    print(f"\nwrote {os.path.relpath(md_path, ROOT)} and {os.path.relpath(png_path, ROOT)}")


def plot(modes, names, results, path, with_loadgen):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [("produce-50%", ["p50", "p95", "p99", "p99.9"], "ProducerPerformance, send -> ack")]
    if with_loadgen:
        panels += [("loadgen-50%", ["p50", "p90", "p99", "p99.9", "p99.99", "max"], "loadgen, send -> ack"),
                   ("loadgen-50%", ["e2e p50", "e2e p90", "e2e p99", "e2e p99.9", "e2e p99.99", "e2e max"],
                    "loadgen, end-to-end")]
    fig, axes = plt.subplots(len(panels), len(modes), figsize=(6 * len(modes), 4.2 * len(panels)), squeeze=False)
    for row, (wl, pcts, what) in enumerate(panels):
        for ax, mode in zip(axes[row], modes):
            for b, style in zip(["Kafka"] + names, ["o-", "s-", "^-", "v-", "d-"]):
                runs = results[mode][b]
                if not runs:
                    continue
                ys = [max(med([x[wl][p] for x in runs]), 0.01) for p in pcts]
                rate = med([x[wl]["rate"] for x in runs])
                ax.plot([p.replace("e2e ", "") for p in pcts], ys, style, label=f"{b} (at {rate:,.0f} rec/s)")
            ax.set_yscale("log")
            ax.set_title(f"{mode}: {what}, at 50% of Kafka max", fontsize=10)
            ax.set_xlabel("percentile")
            ax.set_ylabel("latency, ms (log)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
