"""kcat (librdkafka) producing and consuming against kopd: keys, headers, every codec, idempotence.

Run:  python3 -m pytest -q tests/python/test_kcat.py  (KOPD_BIN overrides the binary path)
"""
import shutil
import subprocess
import time

import pytest

from kopd_harness import create_topic

PARTITIONS = 4
N = 3000
HEADERS = [("hk", "hv"), ("trace", "t-1=2")]


def kcat(kopd, args, stdin=None, timeout=90):
    if shutil.which("kcat") is None:
        pytest.fail("kcat is missing: run scripts/install-peers.sh")
    cmd = ["kcat", "-b", kopd.bootstrap, "-X", "broker.address.family=v4"] + args
    try:
        r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"timed out after {timeout} s: {cmd}\nstdout: {e.stdout!r}\nstderr: {e.stderr!r}")
    return r


def describe(r):
    return (f"exit {r.returncode}\n--- stdout (tail) ---\n{r.stdout[-2000:].decode(errors='replace')}"
            f"\n--- stderr ---\n{r.stderr.decode(errors='replace')[-4000:]}")


def produce_lines(codec):
    lines = []
    for i in range(N):
        key = f"key-{i % 13}"
        val = f"v{i} {codec} " + ("ü€ abc " * (i % 30))
        lines.append((key, val))
    return lines


def kcat_produce(kopd, topic, lines, extra):
    data = "".join(f"{k}:{v}\n" for k, v in lines).encode()
    args = ["-P", "-t", topic, "-K:", "-X", "message.timeout.ms=30000"]
    for k, v in HEADERS:
        args += ["-H", f"{k}={v}"]
    r = kcat(kopd, args + extra, stdin=data)
    assert r.returncode == 0, "kcat -P\n" + describe(r)
    err = r.stderr.decode(errors="replace")
    assert "ERROR" not in err and "Failed" not in err, "kcat -P reported errors\n" + describe(r)


def kcat_consume(kopd, topic, fmt):
    r = kcat(kopd, ["-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", fmt])
    assert r.returncode == 0, "kcat -C\n" + describe(r)
    out = r.stdout.decode("utf-8")
    return [l for l in out.split("\n") if l != ""]


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_kcat_produce_consume_codec(shared_kopd, codec):
    kopd = shared_kopd
    topic = f"kcat-{codec}"
    create_topic(kopd.bootstrap, topic, PARTITIONS)
    lines = produce_lines(codec)
    t0 = int(time.time() * 1000)
    kcat_produce(kopd, topic, lines, ["-z", codec])
    t1 = int(time.time() * 1000)

    got = kcat_consume(kopd, topic, "%p|%o|%k|%s|%h|%T\\n")
    assert len(got) == N, f"kcat -C printed {len(got)} records, produced {N}"
    expected_h = ",".join(f"{k}={v}" for k, v in HEADERS)
    by_key = {}
    offsets = {}
    key_partition = {}
    for line in got:
        p, o, k, s, h, ts = line.split("|")
        p, o, ts = int(p), int(o), int(ts)
        assert h == expected_h, f"headers of {p}@{o}: {h!r}"
        assert t0 - 1000 <= ts <= t1 + 1000, f"timestamp of {p}@{o}: {ts} not within [{t0}, {t1}]"
        assert key_partition.setdefault(k, p) == p, f"key {k} in partitions {key_partition[k]} and {p}"
        offsets.setdefault(p, []).append(o)
        by_key.setdefault(k, []).append((o, s))
    for p, os_ in offsets.items():
        assert sorted(os_) == list(range(len(os_))), f"offsets of partition {p} not contiguous from 0"
    expected = {}
    for k, v in lines:
        expected.setdefault(k, []).append(v)
    actual = {k: [s for _, s in sorted(vs)] for k, vs in by_key.items()}
    assert actual.keys() == expected.keys()
    for k in expected:
        assert actual[k] == expected[k], f"values of key {k} (in offset order) differ from produce order"


def test_kcat_idempotent_producer(shared_kopd):
    kopd = shared_kopd
    topic = "kcat-idempotent"
    create_topic(kopd.bootstrap, topic, PARTITIONS)
    lines = produce_lines("idem")
    kcat_produce(kopd, topic, lines, ["-X", "enable.idempotence=true", "-X", "acks=all", "-z", "lz4"])
    got = kcat_consume(kopd, topic, "%k|%s|%h|%T\\n")
    assert len(got) == N, f"kcat -C printed {len(got)} records, produced {N}"
    expected_h = ",".join(f"{k}={v}" for k, v in HEADERS)
    per_key = {}
    for line in got:
        k, s, h, ts = line.split("|")
        assert h == expected_h
        assert int(ts) > 0
        per_key.setdefault(k, []).append(s)
    expected = {}
    for k, v in lines:
        expected.setdefault(k, []).append(v)
    # kcat prints partitions interleaved, but within one partition (hence one key) in offset order
    assert per_key == expected, "idempotent kcat: consumed key -> values differ from produced"
