#!/usr/bin/env python3
"""Restart time of kopd at a large data size: with log snapshots, and with them removed (the
full rescan every restart did before snapshots existed).

Fills a fresh data dir with GIB GiB of 1 KiB records (confluent-kafka, acks=1), then restarts
kopd several ways and reports the time from spawning the process until every partition
answers a watermark query:

  clean        after SIGTERM (the shutdown snapshot covers everything)
  kill9        after SIGKILL, once a periodic snapshot was taken (a short tail to read)
  no-snapshot  after SIGKILL with every core's log.snapshot deleted (full scan)
  baseline     with --baseline BINARY: that binary (e.g. built before snapshots) after SIGKILL

Each with a warm page cache, and with --cold also after dropping it (root). A benchmark, not a
test: no thresholds. Example:

    cargo build --release && python3 bench/restart_time.py --gib 3
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent


def wait_port(port, deadline):
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.005)
    return False


def start(binary, data, port, cores, extra, snapshots=True):
    cmd = [binary, "serve", "--listen", f"127.0.0.1:{port}", "--cores", str(cores), "--data-dir", str(data),
           "--set", "admin.listen=", *(["--set", "log.snapshot.interval.ms=5000"] if snapshots else []), *extra]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})


def ready(bootstrap, topic, partitions, deadline, proc):
    """Blocks until every partition answers a watermark query."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "restart-bench", "broker.address.family": "v4",
                  "log_level": 0,
                  "reconnect.backoff.ms": 5, "reconnect.backoff.max.ms": 50})
    try:
        for p in range(partitions):
            while True:
                try:
                    c.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)
                    break
                except Exception:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.01)
    finally:
        c.close()


def timed_start(args, data, port, cold, binary=None):
    if cold:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    t0 = time.monotonic()
    proc = start(binary or args.binary, data, port, args.cores, [], snapshots=binary is None)
    deadline = t0 + 600
    if not all(wait_port(port + i, deadline) for i in range(args.cores)):
        proc.kill()
        sys.exit("kopd did not come up")
    listening = time.monotonic() - t0
    ready(f"127.0.0.1:{port}", "restart", args.partitions, deadline, proc)
    return proc, listening, time.monotonic() - t0


def stop(proc, sig, port=None, cores=0):
    proc.send_signal(sig)
    proc.wait(timeout=120)
    # A killed process's listeners close asynchronously (io_uring teardown); a restart timed
    # before they are gone would connect to the dead one.
    deadline = time.monotonic() + 30
    for i in range(cores):
        while port and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port + i), timeout=0.2).close()
                time.sleep(0.01)
            except OSError:
                break


def fill(bootstrap, partitions, total):
    p = Producer({"bootstrap.servers": bootstrap, "broker.address.family": "v4", "acks": "1",
                  "linger.ms": 5, "batch.size": 1 << 20, "queue.buffering.max.kbytes": 1 << 20})
    value = os.urandom(1024)
    sent, t0 = 0, time.monotonic()
    while sent < total:
        try:
            p.produce("restart", value=value, partition=(sent >> 20) % partitions)
            sent += len(value)
        except BufferError:
            p.poll(0.05)
        if sent % (256 << 20) == 0:
            print(f"  {sent >> 20} MiB in {time.monotonic() - t0:.0f} s", flush=True)
    assert p.flush(600) == 0


def fill_topic(args, bootstrap, proc):
    wait_port(args.port, time.monotonic() + 30)
    admin = AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4"})
    admin.create_topics([NewTopic("restart", args.partitions, 1)])["restart"].result(30)
    print(f"filling {args.gib} GiB ...", flush=True)
    fill(bootstrap, args.partitions, int(args.gib * (1 << 30)))
    stop(proc, signal.SIGTERM)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=3)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--port", type=int, default=29092)
    ap.add_argument("--dir", default=str(ROOT / "target" / "restart-bench"))
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "kopd"))
    ap.add_argument("--reuse", action="store_true", help="keep an existing data dir (skip the fill)")
    ap.add_argument("--cold", action="store_true", help="also measure with the page cache dropped (root)")
    ap.add_argument("--fill-only", action="store_true", help="fill the data dir and stop")
    ap.add_argument("--baseline", help="also restart this kopd binary (e.g. a build without snapshots)")
    args = ap.parse_args()
    data = Path(args.dir)
    bootstrap = f"127.0.0.1:{args.port}"
    if not args.reuse:
        shutil.rmtree(data, ignore_errors=True)
        proc = start(args.binary, data, args.port, args.cores, ["--set", "flush=interval"])
        try:
            fill_topic(args, bootstrap, proc)
        except BaseException:
            proc.kill()
            raise

    size = sum(f.stat().st_size for f in (data / "ledgers").rglob("*.log"))
    print(f"data: {size / (1 << 30):.2f} GiB of entry-log segments in {data}")
    if args.fill_only:
        return

    rows = []
    try:
        measure(args, data, rows)
    finally:
        print("\n| restart after | page cache | listening (s) | all partitions answer (s) |\n|---|---|---|---|")
        for kind, cold, lis, rdy in rows:
            print(f"| {kind} | {'dropped' if cold else 'warm'} | {lis:.2f} | {rdy:.2f} |")


def measure(args, data, rows):
    for cold in ([False, True] if args.cold else [False]):
        # clean: after a clean stop (which writes the snapshot).
        proc, _, _ = timed_start(args, data, args.port, False)
        stop(proc, signal.SIGTERM, args.port, args.cores)
        proc, lis, rdy = timed_start(args, data, args.port, cold)
        rows.append(("clean", cold, lis, rdy))
        time.sleep(6)  # a periodic snapshot (every 5 s here) is taken
        stop(proc, signal.SIGKILL, args.port, args.cores)
        proc, lis, rdy = timed_start(args, data, args.port, cold)
        rows.append(("kill9", cold, lis, rdy))
        stop(proc, signal.SIGKILL, args.port, args.cores)
        for snap in (data / "ledgers").glob("core-*/log.snapshot"):
            snap.unlink()
        proc, lis, rdy = timed_start(args, data, args.port, cold)
        rows.append(("no-snapshot", cold, lis, rdy))
        stop(proc, signal.SIGKILL, args.port, args.cores)
        if args.baseline:
            for snap in (data / "ledgers").glob("core-*/log.snapshot"):
                snap.unlink()
            proc, lis, rdy = timed_start(args, data, args.port, cold, args.baseline)
            rows.append(("kill9, baseline binary", cold, lis, rdy))
            stop(proc, signal.SIGKILL, args.port, args.cores)


if __name__ == "__main__":
    main()
