#!/usr/bin/env bash
# Instructions per produced and per fetched record: kopd (one core) runs under callgrind, which
# counts instructions only while a glommio task is being polled (the executor's own idle
# polling is left out), and its counters are zeroed and dumped around each phase:
#   produce  Kafka's ProducerPerformance sends N records (acks=all, full fixed-size batches)
#   fetch    kcat reads the same N records from the beginning
# Prints Ir/record for each phase and the top functions, and appends one line of JSON to
# perf/out/callgrind.jsonl for regression tracking.
#
#   perf/callgrind.sh [--records N] [--size BYTES] [--partitions P] [--batch-bytes B]
#                     [--flush always|interval] [--top K] [--profile profiling|release] [--no-build]
#                     [--commit C   (with --no-build: the commit the binary was built from)]
#                     [--tail-cache BYTES   (log.tail.cache.bytes; 0 by default, so the fetch
#                                            phase measures reads from the ledger store)]
#
# Why the knob `io.spin.before.park.us`: valgrind runs one thread at a time and keeps its lock
# while a thread blocks in io_uring_enter (valgrind 3.19 does not mark that syscall as blocking).
# An idle glommio executor sleeps exactly there, so any thread it waits for (its blocking-I/O
# helper, kopd's metadata-store thread) never runs and kopd hangs. A core that spins instead of
# sleeping never blocks in io_uring_enter; the spin is outside task polls, so it is not counted.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

RECORDS=20000 SIZE=1024 PARTITIONS=1 BATCH=65536 FLUSH=always TAIL_CACHE=0 TOP=25 PROFILE=profiling BUILD=1 PORT=29392
while [ $# -gt 0 ]; do
  case "$1" in
    --records) RECORDS=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --partitions) PARTITIONS=$2; shift 2 ;;
    --batch-bytes) BATCH=$2; shift 2 ;;
    --flush) FLUSH=$2; shift 2 ;;
    --top) TOP=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --port) PORT=$2; shift 2 ;;
    --commit) COMMIT_OF_BINARY=$2; shift 2 ;;
    --tail-cache) TAIL_CACHE=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
OUT="$ROOT/perf/out"
mkdir -p "$OUT"
log() { echo "callgrind: $*" >&2; }

if ! command -v valgrind >/dev/null 2>&1 || ! command -v callgrind_control >/dev/null 2>&1; then
  log "installing valgrind"
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >/dev/null
fi
bash scripts/install-peers.sh >/dev/null
source "$ROOT/perf/build.sh"

WORK=$(mktemp -d /tmp/kopd-callgrind.XXXXXX)
VG_PID=
cleanup() {
  if [ -n "$VG_PID" ] && kill -0 "$VG_PID" 2>/dev/null; then
    kill "$VG_PID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$VG_PID" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$VG_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Collection is on only inside a task poll; startup is zeroed away before the first phase.
RUST_LOG=warn valgrind --tool=callgrind --collect-atstart=no \
  --toggle-collect='glommio::task::raw::RawTask*::run*' \
  --callgrind-out-file="$WORK/cg.out" \
  "$KOPD" serve --listen "127.0.0.1:$PORT" --cores 1 --data-dir "$WORK/data" \
  --set "flush=$FLUSH" --set "log.tail.cache.bytes=$TAIL_CACHE" --set io.spin.before.park.us=30000000 >"$WORK/kopd.log" 2>&1 &
VG_PID=$!
for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || { cat "$WORK/kopd.log" >&2; exit 1; }
BOOT="127.0.0.1:$PORT"
timeout 300 .peers/bin/kafka-topics.sh --bootstrap-server "$BOOT" --create --topic cg --partitions "$PARTITIONS" >/dev/null

# Everything is slow under valgrind: generous client timeouts. linger.ms is long so batches
# close when full, which keeps the records-per-batch (and so Ir/record) stable run to run.
phase() { # name, command...
  local name=$1; shift
  callgrind_control -z "$VG_PID" >/dev/null 2>&1
  "$@" >"$WORK/$name.client" 2>&1
  callgrind_control -d "$name" "$VG_PID" >/dev/null 2>&1
  # The dump is written asynchronously (at the next basic-block boundary).
  local f
  for _ in $(seq 150); do
    f=$(grep -l "^desc: Trigger: Client Request: $name\|^desc: Trigger: .*$name" "$WORK"/cg.out.* 2>/dev/null | head -1 || true)
    [ -n "$f" ] && break
    sleep 0.2
  done
  [ -n "$f" ] || { echo "no callgrind dump for $name" >&2; exit 1; }
  mv "$f" "$WORK/$name.cg"
}

log "produce phase: $RECORDS x $SIZE B into $PARTITIONS partition(s)"
phase produce timeout 1200 .peers/bin/kafka-producer-perf-test.sh --topic cg --num-records "$RECORDS" \
  --record-size "$SIZE" --throughput -1 --producer-props bootstrap.servers="$BOOT" acks=all \
  linger.ms=1000 batch.size="$BATCH" request.timeout.ms=300000 delivery.timeout.ms=900000 \
  max.in.flight.requests.per.connection=5
grep -q "^$RECORDS records sent" "$WORK/produce.client" || { cat "$WORK/produce.client" >&2; exit 1; }

log "fetch phase: $RECORDS records from the beginning"
phase fetch timeout 1200 kcat -b "$BOOT" -C -t cg -o beginning -c "$RECORDS" -e -q -f '%o\n' \
  -X socket.timeout.ms=300000 -X fetch.wait.max.ms=100
FETCHED=$(wc -l <"$WORK/fetch.client")
[ "$FETCHED" -eq "$RECORDS" ] || { echo "fetched $FETCHED of $RECORDS" >&2; tail -5 "$WORK/fetch.client" >&2; exit 1; }

ir() { awk '/^(summary|totals):/ { print $2; exit }' "$1"; }
P_IR=$(ir "$WORK/produce.cg")
F_IR=$(ir "$WORK/fetch.cg")
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
DIRTY=$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null && echo false || echo true)
# A binary built earlier (--no-build) is labelled with the commit it was built from.
if [ -n "${COMMIT_OF_BINARY:-}" ]; then COMMIT=$COMMIT_OF_BINARY DIRTY=false; fi
P_PER=$((P_IR / RECORDS))
F_PER=$((F_IR / RECORDS))

REPORT="$OUT/callgrind-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
  echo "kopd callgrind: commit $COMMIT (uncommitted changes: $DIRTY), $RECORDS records x $SIZE B, $PARTITIONS partition(s), batch.size=$BATCH, flush=$FLUSH, log.tail.cache.bytes=$TAIL_CACHE, 1 core"
  echo "produce: $P_IR Ir = $P_PER Ir/record"
  echo "fetch:   $F_IR Ir = $F_PER Ir/record"
  for ph in produce fetch; do
    echo
    echo "== $ph: top $TOP functions by exclusive Ir"
    callgrind_annotate --threshold=100 "$WORK/$ph.cg" 2>/dev/null | awk '/^-+$/ { d++; next } d >= 3 && NF && !/\(100\.0%\)/' | head -"$TOP" || true
    echo
    echo "== $ph: top $TOP functions by inclusive Ir"
    callgrind_annotate --inclusive=yes --threshold=100 "$WORK/$ph.cg" 2>/dev/null | awk '/^-+$/ { d++; next } d >= 3 && NF && !/\(100\.0%\)/' | head -"$TOP" || true
  done
} >"$REPORT"
cp "$WORK/produce.cg" "$OUT/callgrind.produce.out"
cp "$WORK/fetch.cg" "$OUT/callgrind.fetch.out"
# The tracked history (committed with the change it measures): one line per run.
RESULTS="$ROOT/perf/results/callgrind.jsonl"
mkdir -p "$(dirname "$RESULTS")"
printf '{"time":"%s","commit":"%s","dirty":%s,"binary":"%s","records":%d,"size":%d,"partitions":%d,"batch_bytes":%d,"flush":"%s","tail_cache":%d,"produce_ir_per_record":%d,"fetch_ir_per_record":%d}\n' \
  "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$COMMIT" "$DIRTY" "$PROFILE" "$RECORDS" "$SIZE" "$PARTITIONS" "$BATCH" "$FLUSH" "$TAIL_CACHE" "$P_PER" "$F_PER" \
  >>"$RESULTS"
cat "$REPORT"
echo
tail -1 "$RESULTS"
log "wrote $REPORT, perf/out/callgrind.{produce,fetch}.out (callgrind_annotate / kcachegrind) and a line in perf/results/callgrind.jsonl"
