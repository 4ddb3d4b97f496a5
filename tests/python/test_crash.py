"""Crash safety: an idempotent, acks=all producer writes numbered records while kopd is
SIGKILLed at random moments and restarted on the same ports and data dir. Afterwards every
acknowledged record is present exactly once, at the offset its delivery report named, and
each partition holds strictly increasing sequence numbers (no duplicates, even of records
that were never acknowledged).

Runs KOPD_CRASH_RUNS times (default 2); e.g. KOPD_CRASH_RUNS=20 python3 -m pytest -q
tests/python/test_crash.py. KOPD_CRASH_SEED fixes the random schedule.
"""
import os
import random
import threading
import time

import pytest
from confluent_kafka import Producer

from kopd_harness import consume_all, create_topic

RUNS = int(os.environ.get("KOPD_CRASH_RUNS", "2"))
SEED = os.environ.get("KOPD_CRASH_SEED")
CYCLES = 5
PARTITIONS = 4
TOPIC = "crash"
RUN_BUDGET_S = 300  # one run, end to end


@pytest.mark.parametrize("run", range(RUNS))
def test_sigkill_restart_idempotent_producer(kopd_factory, run):
    seed = int(SEED) + run if SEED is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"crash run {run}: seed {seed}")
    t_start = time.monotonic()
    k = kopd_factory(cores=2)
    create_topic(k.bootstrap, TOPIC, PARTITIONS)

    acked = {}     # seq -> (partition, offset)
    failed = {}    # seq -> error
    errors = []
    lock = threading.Lock()

    def on_delivery(err, msg, seq):
        with lock:
            if err is not None:
                failed[seq] = err
            else:
                acked[seq] = (msg.partition(), msg.offset())

    p = Producer({
        "bootstrap.servers": k.bootstrap,
        "broker.address.family": "v4",
        "enable.idempotence": True,
        "acks": "all",
        "message.timeout.ms": 60000,
        "linger.ms": 2,
        "retry.backoff.ms": 50,
        "retry.backoff.max.ms": 500,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "topic.metadata.refresh.interval.ms": 2000,
        "queue.buffering.max.messages": 50000,
        "error_cb": lambda e: errors.append(e),
    })

    killer_done = threading.Event()
    killer_error = []
    restarts = []  # (cycle, seq produced before the restart completed)
    next_seq = [0]

    def killer():
        try:
            for cycle in range(CYCLES):
                time.sleep(rng.uniform(0.3, 1.5))
                k.kill()
                time.sleep(rng.uniform(0.0, 0.3))
                k.start()
                restarts.append((cycle, next_seq[0]))
        except BaseException as e:  # pytest.fail raises a BaseException subclass
            killer_error.append(e)
        finally:
            killer_done.set()

    th = threading.Thread(target=killer, name="kopd-killer", daemon=True)
    th.start()
    after_done = None
    try:
        while True:
            if time.monotonic() - t_start > RUN_BUDGET_S / 2:
                pytest.fail(f"producing phase exceeded {RUN_BUDGET_S / 2} s (seed {seed})")
            if killer_done.is_set():
                if after_done is None:
                    after_done = time.monotonic()
                elif time.monotonic() - after_done > 2.0:
                    break
            for _ in range(50):
                seq = next_seq[0]
                part = seq % PARTITIONS
                try:
                    p.produce(TOPIC, key=str(part).encode(), value=str(seq).encode(), partition=part,
                              on_delivery=lambda err, msg, s=seq: on_delivery(err, msg, s))
                except BufferError:
                    break
                next_seq[0] += 1
            p.poll(0.01)
    finally:
        th.join(timeout=60)
    if killer_error:
        raise killer_error[0]
    assert len(restarts) == CYCLES, f"restarts done: {restarts}"

    remaining = p.flush(120)
    assert remaining == 0, f"{remaining} records neither delivered nor failed 120 s after the last restart"
    produced = next_seq[0]
    fatal = [e for e in errors if e.fatal()]
    print(f"crash run {run}: produced {produced}, acked {len(acked)}, failed {len(failed)}, "
          f"restarts at seq {[s for _, s in restarts]}")
    assert not fatal, f"fatal producer errors (seed {seed}): {fatal}"
    assert len(acked) + len(failed) == produced
    assert acked, "no record was acknowledged"
    last_restart_seq = restarts[-1][1]
    assert any(s >= last_restart_seq for s in acked), \
        f"nothing produced after the last restart (seq >= {last_restart_seq}) was acknowledged"

    assert k.proc.poll() is None, "kopd died after the last restart\n" + k.log_tail()
    got, high = consume_all(k.bootstrap, TOPIC, PARTITIONS, timeout=90)
    where = {}  # seq -> (partition, offset) as stored
    for part in range(PARTITIONS):
        msgs = got[part]
        assert [m.offset() for m in msgs] == list(range(len(msgs))), \
            f"partition {part}: offsets not contiguous from 0 (seed {seed})"
        prev = -1
        for m in msgs:
            seq = int(m.value())
            assert m.key() == str(part).encode(), f"key at {part}@{m.offset()}"
            assert seq % PARTITIONS == part, f"seq {seq} stored in partition {part}"
            assert seq not in where, \
                f"seq {seq} stored twice: {where.get(seq)} and {(part, m.offset())} (seed {seed})"
            assert seq > prev, \
                f"partition {part}: seq {seq} at offset {m.offset()} after seq {prev} (seed {seed})"
            prev = seq
            where[seq] = (part, m.offset())
    missing = sorted(s for s in acked if s not in where)
    assert not missing, (f"{len(missing)} acknowledged records lost, e.g. seqs {missing[:10]} "
                         f"(acked at {[acked[s] for s in missing[:10]]}); seed {seed}")
    moved = [(s, acked[s], where[s]) for s in acked if acked[s] != where[s]]
    assert not moved, f"acknowledged records not at their acknowledged offsets: {moved[:10]} (seed {seed})"
    print(f"crash run {run}: stored {len(where)} (acked {len(acked)}, unacked but stored "
          f"{len(where) - len(acked)}), {time.monotonic() - t_start:.1f} s")
    assert time.monotonic() - t_start < RUN_BUDGET_S, f"run took over {RUN_BUDGET_S} s"
