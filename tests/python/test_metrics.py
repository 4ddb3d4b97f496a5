"""Prometheus metrics: kopd's /metrics passes `promtool check metrics`, and a real Prometheus
server (Debian's package, started here on 127.0.0.1) scrapes it and answers PromQL queries for
the records produced and a consumer group's lag.

Run:  python3 -m pytest -q tests/python/test_metrics.py  (KOPD_BIN overrides the binary path)
"""
import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from kopd_harness import create_topic, free_ports

TOPIC = "metrics-t"
GROUP = "metrics-g"
RECORDS = 300


def tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: run scripts/install-peers.sh (it installs Debian's prometheus)")
    return path


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()


def wait_for(what, fn, timeout=60.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last is not None:
                return last
        except OSError as e:
            last = e
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what} (last: {last})")


def produce_and_commit(bootstrap):
    """RECORDS records over two partitions; the group commits offset 10 of partition 0 and
    nothing of partition 1. Returns the high watermarks."""
    p = Producer({"bootstrap.servers": bootstrap, "broker.address.family": "v4", "enable.idempotence": True})
    for i in range(RECORDS):
        p.produce(TOPIC, value=b"m%d" % i, partition=i % 2)
    assert p.flush(30) == 0, "every record acknowledged"
    c = Consumer({"bootstrap.servers": bootstrap, "broker.address.family": "v4", "group.id": GROUP,
                  "enable.auto.commit": False})
    try:
        highs = [c.get_watermark_offsets(TopicPartition(TOPIC, i), timeout=30, cached=False)[1] for i in (0, 1)]
        c.commit(offsets=[TopicPartition(TOPIC, 0, 10)], asynchronous=False)
    finally:
        c.close()
    return highs


def test_prometheus_scrapes_kopd_and_answers_promql(kopd_factory):
    promtool, prometheus = tool("promtool"), tool("prometheus")
    admin_port = free_ports(1)
    k = kopd_factory(settings={"admin.listen": f"127.0.0.1:{admin_port}"})
    create_topic(k.bootstrap, TOPIC, 2)
    highs = produce_and_commit(k.bootstrap)
    assert sum(highs) == RECORDS, highs

    metrics_url = f"http://127.0.0.1:{admin_port}/metrics"
    # The committed offset reaches the partition's cursor within the mirror interval (1 s).
    lag_line = f'kopd_consumer_group_lag{{broker="'

    def scraped():
        status, ctype, body = http_get(metrics_url)
        return body if status == 200 and lag_line in body and GROUP in body else None

    body = wait_for("the group's lag in /metrics", scraped)
    _, ctype, _ = http_get(metrics_url)
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, f"promtool check metrics:\n{check.stdout}\n{check.stderr}"
    for family in ["kopd_requests_total", "kopd_request_duration_seconds_bucket", "kopd_fsync_duration_seconds_count",
                   "kopd_produce_stage_duration_seconds_count", "kopd_partition_records_in_total",
                   "kopd_connections_accepted_total", "kopd_groups", "kopd_partition_ledgers"]:
        assert family in body, f"{family} missing from /metrics"

    with tempfile.TemporaryDirectory(prefix="kopd-prom-") as tmp:
        prom_port = free_ports(1)
        config = Path(tmp) / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: kopd\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{admin_port}']\n")
        log = open(Path(tmp) / "prometheus.log", "wb")
        proc = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
                                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            def query(q):
                url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
                status, _, text = http_get(url)
                data = json.loads(text)
                assert status == 200 and data["status"] == "success", text
                result = data["data"]["result"]
                return float(result[0]["value"][1]) if result else None

            def until(q, want):
                return wait_for(f"{q} == {want}", lambda: (v := query(q)) == want and v or None, timeout=90)

            until(f'sum(kopd_partition_records_in_total{{topic="{TOPIC}"}})', float(RECORDS))
            until(f'kopd_consumer_group_lag{{group="{GROUP}",topic="{TOPIC}",partition="0"}}', float(highs[0] - 10))
            assert query('up{job="kopd"}') == 1.0
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
