"""A corrupted tail of the newest entry-log segment: kopd still starts, serves an intact prefix
(offsets contiguous from 0, byte-identical records), and accepts and serves new records.

Run:  python3 -m pytest -q tests/python/test_disk_corruption.py
"""
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from kopd_harness import consume_all, create_topic

TOPIC = "corrupt"
N = 1000
BATCH = 20          # records per flush: at most one such batch should be lost to a tail flip
SEG_HEADER = 32     # bytes of segment header, left alone
FLIP_SPAN = 64      # bytes at the end of the file in which bytes are flipped


def produce(bootstrap, records):
    """Produces [(key, value, headers, ts)] with acks=all, flushing every BATCH records.
    Returns the delivered offsets in order."""
    offsets, errors = [], []

    def cb(err, msg):
        if err is not None:
            errors.append(err)
        else:
            offsets.append(msg.offset())

    p = Producer({"bootstrap.servers": bootstrap, "broker.address.family": "v4", "acks": "all",
                  "message.timeout.ms": 30000, "linger.ms": 1})
    for i, (k, v, h, ts) in enumerate(records):
        p.produce(TOPIC, key=k, value=v, headers=h, timestamp=ts, partition=0, on_delivery=cb)
        if (i + 1) % BATCH == 0:
            assert p.flush(60) == 0, "flush timed out"
            assert not errors, f"delivery errors: {errors[:5]}"
    assert p.flush(60) == 0, "flush timed out"
    assert not errors, f"delivery errors: {errors[:5]}"
    return offsets


def record(i, ts0, tag):
    return (f"{tag}-key-{i}".encode(),
            f"{tag}-value-{i}:".encode() + bytes((i * 7 + j) % 256 for j in range(i % 300)),
            [("i", str(i).encode()), ("tag", tag.encode())],
            ts0 + i)


def segment_to_corrupt(data_dir):
    root = Path(data_dir) / "ledgers"
    cores = sorted(d for d in root.glob("core-*") if d.is_dir()) if root.is_dir() else []
    listing = "\n".join(str(x) + f" ({x.stat().st_size} B)" for x in sorted(Path(data_dir).rglob("*")) if x.is_file())
    if not cores:
        pytest.fail(f"no {root}/core-* directories; data dir holds:\n{listing}")

    def size(d):
        return sum(f.stat().st_size for f in d.glob("*.log"))

    core = max(cores, key=size)
    segs = sorted(core.glob("*.log"))
    if not segs:
        pytest.fail(f"no *.log segment in {core}; data dir holds:\n{listing}")
    return segs[-1], listing


@pytest.mark.parametrize("where", ["data-tail", "file-tail"])
def test_corrupt_tail_of_newest_segment(kopd_factory, where):
    """data-tail: flip bytes in the last FLIP_SPAN bytes that were written (segments may be padded
    with zeros, so this is the end of the last non-zero byte run: the newest entry);
    file-tail: flip bytes in the last FLIP_SPAN bytes of the file, whatever they hold."""
    k = kopd_factory(cores=2)
    create_topic(k.bootstrap, TOPIC, 1)
    ts0 = int(time.time() * 1000) - 60_000
    sent = [record(i, ts0, "a") for i in range(N)]
    offs = produce(k.bootstrap, sent)
    assert offs == list(range(N)), "delivery offsets of the first 1000 records"

    k.kill()
    seg, listing = segment_to_corrupt(k.data_dir)
    data = bytearray(seg.read_bytes())
    assert len(data) > SEG_HEADER, f"{seg} holds only {len(data)} bytes\n{listing}"
    if where == "data-tail":
        end = len(data.rstrip(b"\0"))
    else:
        end = len(data)
    start = max(SEG_HEADER, end - FLIP_SPAN)
    assert end > start, f"nothing to corrupt in {seg} ({len(data)} B)\n{listing}"
    flipped = list(range(start, end, 5))
    for pos in flipped:
        data[pos] ^= 0xFF
    seg.write_bytes(bytes(data))
    print(f"{where}: flipped {len(flipped)} bytes in [{start}, {end}) of {seg} ({len(data)} B)")

    k.start()  # fails the test if kopd does not come up
    got, high = consume_all(k.bootstrap, TOPIC, 1, timeout=60)
    msgs = got[0]
    kept = len(msgs)
    print(f"after corruption kopd serves {kept} of {N} records (high watermark {high[0]})")
    assert high[0] == kept
    assert kept <= N
    assert [m.offset() for m in msgs] == list(range(kept)), "offsets not contiguous from 0"
    for m in msgs:
        key, value, headers, ts = sent[m.offset()]
        where = f"offset {m.offset()}"
        assert m.key() == key, where
        assert m.value() == value, where
        assert m.headers() == headers, where
        assert m.timestamp()[1] == ts, where
    assert kept >= N - BATCH, (f"flipping the last {FLIP_SPAN} bytes lost {N - kept} records; "
                               f"at most the final batch of {BATCH} should go")

    more = [record(i, ts0 + N, "b") for i in range(100)]
    offs = produce(k.bootstrap, more)
    assert offs == list(range(kept, kept + 100)), "offsets of records produced after recovery"
    got, high = consume_all(k.bootstrap, TOPIC, 1, timeout=60)
    msgs = got[0]
    assert [m.offset() for m in msgs] == list(range(kept + 100))
    for m in msgs:
        key, value, headers, ts = sent[m.offset()] if m.offset() < kept else more[m.offset() - kept]
        where = f"offset {m.offset()} after new produces"
        assert (m.key(), m.value(), m.headers(), m.timestamp()[1]) == (key, value, headers, ts), where

    # and it all survives a clean restart
    assert k.stop() == 0, "kopd exit status after SIGTERM\n" + k.log_tail()
    k.start()
    got, high = consume_all(k.bootstrap, TOPIC, 1, timeout=60)
    assert [m.offset() for m in got[0]] == list(range(kept + 100)), "after a clean restart"
    assert [m.value() for m in got[0]] == [r[1] for r in sent[:kept]] + [r[1] for r in more]
