"""confluent-kafka idempotent producer (enable.idempotence, acks=all) and an assign()-based
consumer: exactly-once content and per-partition order.

Run:  python3 -m pytest -q tests/python/test_confluent_idempotent.py
"""
import time

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Producer

from kopd_harness import consume_all, create_topic

PARTITIONS = 4
N = 10_000


def test_idempotent_produce_consume_exactly_once(shared_kopd):
    kopd = shared_kopd
    topic = "py-idempotent"
    create_topic(kopd.bootstrap, topic, PARTITIONS)

    errors = []
    delivered = {}  # seq -> (partition, offset)
    failed = {}

    def on_delivery(err, msg, seq):
        if err is not None:
            failed[seq] = err
        else:
            delivered[seq] = (msg.partition(), msg.offset())

    p = Producer({
        "bootstrap.servers": kopd.bootstrap,
        "broker.address.family": "v4",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 60000,
        "error_cb": lambda e: errors.append(e),
    })
    base_ts = int(time.time() * 1000) - 100_000
    sent = []
    for i in range(N):
        key = f"key-{i % 37}".encode()
        value = f"value-{i}-".encode() + bytes([i % 256]) * (i % 200)
        headers = [("seq", str(i).encode()), ("bin", bytes([0, 1, 2, i % 256])), ("empty", b"")]
        sent.append((key, value, headers, base_ts + i))
        while True:
            try:
                p.produce(topic, value=value, key=key, headers=headers, timestamp=base_ts + i,
                          on_delivery=lambda err, msg, seq=i: on_delivery(err, msg, seq))
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    remaining = p.flush(90)
    assert remaining == 0, f"{remaining} messages not delivered within 90 s"
    assert not failed, f"{len(failed)} deliveries failed, e.g. {list(failed.items())[:3]}"
    assert len(delivered) == N
    fatal = [e for e in errors if e.fatal()]
    assert not fatal, f"fatal producer errors: {fatal}"

    # delivery reports: per partition, contiguous offsets from 0, in produce order
    by_part = {}
    for seq in range(N):
        part, off = delivered[seq]
        by_part.setdefault(part, []).append((seq, off))
    for part, lst in by_part.items():
        assert [off for _, off in lst] == list(range(len(lst))), \
            f"partition {part}: delivery-report offsets not contiguous in produce order"

    got, high = consume_all(kopd.bootstrap, topic, PARTITIONS)
    assert sum(len(v) for v in got.values()) == N, f"consumed {sum(len(v) for v in got.values())} != {N}"
    for part in range(PARTITIONS):
        exp = by_part.get(part, [])
        act = got[part]
        assert high[part] == len(exp), f"high watermark of partition {part}"
        assert len(act) == len(exp), f"partition {part}: consumed {len(act)}, delivered {len(exp)}"
        for (seq, off), m in zip(exp, act):
            key, value, headers, ts = sent[seq]
            where = f"partition {part} offset {m.offset()} (seq {seq})"
            assert m.offset() == off, where
            assert m.key() == key, where
            assert m.value() == value, where
            assert m.headers() == headers, where
            assert m.timestamp() == (TIMESTAMP_CREATE_TIME, ts), where
