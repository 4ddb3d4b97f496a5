#!/usr/bin/env bash
# Produce and fetch throughput of kopd with real clients: Kafka's own ProducerPerformance
# (Java, acks=all by default) for produce, kcat (librdkafka) reading every partition from the
# beginning for fetch. Prints one summary block. The side-by-side comparison with Apache Kafka
# is bench/compare (a later step); this measures kopd alone.
#
#   bench/throughput.sh [--records N] [--size BYTES] [--partitions P] [--acks all|1] [--cores C]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RECORDS=1000000 SIZE=1024 PARTITIONS=16 ACKS=all CORES=0 PORT=29092
while [ $# -gt 0 ]; do
  case "$1" in
    --records) RECORDS=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --partitions) PARTITIONS=$2; shift 2 ;;
    --acks) ACKS=$2; shift 2 ;;
    --cores) CORES=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

bash scripts/install-peers.sh >/dev/null
cargo build --release --locked -q
DATA=$(mktemp -d /tmp/kopd-bench.XXXXXX)
KOPD_PID=
cleanup() {
  [ -n "$KOPD_PID" ] && kill "$KOPD_PID" 2>/dev/null && wait "$KOPD_PID" 2>/dev/null
  rm -rf "$DATA"
}
trap cleanup EXIT

RUST_LOG=warn target/release/kopd serve --listen "127.0.0.1:$PORT" --cores "$CORES" --data-dir "$DATA" &
KOPD_PID=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
BOOT="127.0.0.1:$PORT"

.peers/bin/kafka-topics.sh --bootstrap-server "$BOOT" --create --topic bench --partitions "$PARTITIONS" >/dev/null

PRODUCE_OUT=$(.peers/bin/kafka-producer-perf-test.sh --topic bench --num-records "$RECORDS" --record-size "$SIZE" \
  --throughput -1 --producer-props bootstrap.servers="$BOOT" acks="$ACKS" linger.ms=5 batch.size=262144 \
  2>/dev/null | tail -1)

START=$(date +%s%N)
FETCHED=$(kcat -b "$BOOT" -C -t bench -o beginning -e -q -f '%o\n' -X fetch.max.bytes=52428800 | wc -l)
END=$(date +%s%N)
RSS_KIB=$(awk '/VmHWM/ {print $2}' "/proc/$KOPD_PID/status")

echo "kopd throughput: records=$RECORDS size=$SIZE partitions=$PARTITIONS acks=$ACKS cores=${CORES/#0/all}"
echo "produce (ProducerPerformance): $PRODUCE_OUT"
awk -v n="$FETCHED" -v ns="$((END - START))" -v size="$SIZE" 'BEGIN {
  s = ns / 1e9; printf "fetch (kcat, from the beginning): %d records in %.2f s = %.0f records/s, %.1f MB/s\n", n, s, n / s, n * size / s / 1048576 }'
echo "kopd peak RSS: $((RSS_KIB / 1024)) MiB"
[ "$FETCHED" -eq "$RECORDS" ] || { echo "fetched $FETCHED of $RECORDS records" >&2; exit 1; }
