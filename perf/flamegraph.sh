#!/usr/bin/env bash
# CPU flamegraph of kopd under a real client workload: perf samples the kopd process (all its
# threads) while Kafka's ProducerPerformance produces and kcat consumes; inferno folds the
# stacks and draws an SVG. Output goes to perf/out/ (gitignored).
#
#   perf/flamegraph.sh [--workload produce|consume|both] [--records N] [--size BYTES]
#                      [--partitions P] [--cores C] [--flush always|interval] [--acks all|1]
#                      [--freq HZ] [--call-graph dwarf|fp] [--profile profiling|release]
#                      [--no-build] [--name NAME]
#
# Writes perf/out/NAME.svg (the flamegraph), NAME.folded (collapsed stacks, for diffing with
# inferno-diff-folded) and NAME.txt (client output and the hottest frames).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

WORKLOAD=both RECORDS=1000000 SIZE=1024 PARTITIONS=16 CORES=0 FLUSH=always ACKS=all
FREQ=999 CALLGRAPH=dwarf PROFILE=profiling BUILD=1 NAME= PORT=29292
while [ $# -gt 0 ]; do
  case "$1" in
    --workload) WORKLOAD=$2; shift 2 ;;
    --records) RECORDS=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --partitions) PARTITIONS=$2; shift 2 ;;
    --cores) CORES=$2; shift 2 ;;
    --flush) FLUSH=$2; shift 2 ;;
    --acks) ACKS=$2; shift 2 ;;
    --freq) FREQ=$2; shift 2 ;;
    --call-graph) CALLGRAPH=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --name) NAME=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
case "$WORKLOAD" in produce|consume|both) ;; *) echo "--workload: produce, consume or both" >&2; exit 2 ;; esac
NAME=${NAME:-flame-$WORKLOAD-$FLUSH-$(date -u +%Y%m%dT%H%M%SZ)}
OUT="$ROOT/perf/out"
mkdir -p "$OUT"

log() { echo "flamegraph: $*" >&2; }

# ---- tools -------------------------------------------------------------------
if ! command -v perf >/dev/null 2>&1; then
  log "installing perf (linux-perf)"
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-perf >/dev/null
fi
TOOLS="$ROOT/perf/.tools"
export PATH="$TOOLS/bin:$PATH"
if ! command -v inferno-flamegraph >/dev/null 2>&1 || ! command -v inferno-collapse-perf >/dev/null 2>&1; then
  log "installing inferno into $TOOLS"
  cargo install inferno --locked --quiet --root "$TOOLS"
fi
bash scripts/install-peers.sh >/dev/null

# ---- kopd with symbols ---------------------------------------------------------
source "$ROOT/perf/build.sh"

DATA=$(mktemp -d /tmp/kopd-flame.XXXXXX)
KOPD_PID= PERF_PID=
cleanup() {
  [ -n "$PERF_PID" ] && kill -INT "$PERF_PID" 2>/dev/null && wait "$PERF_PID" 2>/dev/null
  [ -n "$KOPD_PID" ] && kill "$KOPD_PID" 2>/dev/null && wait "$KOPD_PID" 2>/dev/null
  rm -rf "$DATA"
}
trap cleanup EXIT

RUST_LOG=warn "$KOPD" serve --listen "127.0.0.1:$PORT" --cores "$CORES" --data-dir "$DATA/data" \
  --set "flush=$FLUSH" >"$DATA/kopd.log" 2>&1 &
KOPD_PID=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
BOOT="127.0.0.1:$PORT"
.peers/bin/kafka-topics.sh --bootstrap-server "$BOOT" --create --topic flame --partitions "$PARTITIONS" >/dev/null

produce() {
  .peers/bin/kafka-producer-perf-test.sh --topic flame --num-records "$RECORDS" --record-size "$SIZE" \
    --throughput -1 --producer-props bootstrap.servers="$BOOT" acks="$ACKS" linger.ms=5 batch.size=262144 \
    2>/dev/null | tail -1
}
consume() {
  local t0 t1 n
  t0=$(date +%s%N)
  n=$(kcat -b "$BOOT" -C -t flame -o beginning -e -q -f '%o\n' -X fetch.max.bytes=52428800 | wc -l)
  t1=$(date +%s%N)
  awk -v n="$n" -v ns="$((t1 - t0))" 'BEGIN { printf "kcat: %d records in %.2f s = %.0f records/s\n", n, ns / 1e9, n / (ns / 1e9) }'
}

# A consume-only profile needs data: produce it before sampling starts.
[ "$WORKLOAD" = consume ] && produce >"$DATA/client.txt"

# cpu-clock works in VMs without hardware counters; dwarf unwinding needs no frame pointers.
CG=(--call-graph "$CALLGRAPH")
[ "$CALLGRAPH" = dwarf ] && CG=(--call-graph dwarf,16384)
log "sampling kopd (pid $KOPD_PID) at $FREQ Hz during: $WORKLOAD"
perf record -e cpu-clock -F "$FREQ" "${CG[@]}" -p "$KOPD_PID" -o "$OUT/$NAME.perf.data" 2>"$DATA/perf.log" &
PERF_PID=$!
sleep 1
case "$WORKLOAD" in
  produce) produce | tee -a "$DATA/client.txt" ;;
  consume) consume | tee -a "$DATA/client.txt" ;;
  both) { produce; consume; } | tee -a "$DATA/client.txt" ;;
esac
kill -INT "$PERF_PID"
wait "$PERF_PID" || true
PERF_PID=

log "folding stacks"
perf script -i "$OUT/$NAME.perf.data" 2>/dev/null | inferno-collapse-perf --all >"$OUT/$NAME.folded"
inferno-flamegraph --title "kopd: $WORKLOAD, $RECORDS x $SIZE B, $PARTITIONS partitions, flush=$FLUSH, acks=$ACKS" \
  <"$OUT/$NAME.folded" >"$OUT/$NAME.svg"
{
  echo "kopd $WORKLOAD: records=$RECORDS size=$SIZE partitions=$PARTITIONS cores=${CORES/#0/all} flush=$FLUSH acks=$ACKS"
  cat "$DATA/client.txt"
  echo
  echo "self time, top 40 frames (% of samples):"
  awk '{ n = $NF; $NF = ""; sub(/ $/, ""); k = split($0, f, ";"); self[f[k]] += n; total += n }
       END { for (s in self) printf "%6.2f%%  %s\n", 100 * self[s] / total, s }' "$OUT/$NAME.folded" |
    sort -rn | head -40
} >"$OUT/$NAME.txt"
rm -f "$OUT/$NAME.perf.data"
cat "$OUT/$NAME.txt"
log "wrote $OUT/$NAME.svg, $OUT/$NAME.folded, $OUT/$NAME.txt"
