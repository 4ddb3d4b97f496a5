#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft combined mode: broker + controller; version KAFKA_VERSION below,
# the one scripts/install-peers.sh installs) run from the Maven jars that install-peers.sh puts in
# .peers/kafka-$KAFKA_VERSION/libs. Used by bench/compare.py as the reference broker and by the
# differential suite (tests/differential/).
#
#   scripts/kafka-server.sh start DIR PORT [key=value ...]   # extra server.properties lines
#   scripts/kafka-server.sh stop DIR
#
# start: writes DIR/server.properties (log dirs in DIR/data, controller on PORT+1000), formats the
# storage, starts kafka.Kafka in the background (heap KAFKA_HEAP, default -Xmx1g -Xms1g, log in
# DIR/kafka.out), waits (at most KAFKA_START_TIMEOUT s, default 60) until the port answers a
# Metadata request and writes DIR/kafka.pid. Everything binds to 127.0.0.1.
# stop: SIGTERM, up to 30 s, then SIGKILL.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAFKA_VERSION=4.4.0
LIBS="$ROOT/.peers/kafka-$KAFKA_VERSION/libs"
log() { echo "kafka-server: $*" >&2; }

cmd=${1:-}
DIR=${2:-}
[ -n "$cmd" ] && [ -n "$DIR" ] || { echo "usage: $0 start|stop DIR [PORT] [key=value ...]" >&2; exit 2; }

stop() {
  local pidf="$DIR/kafka.pid" pid
  [ -f "$pidf" ] || { log "no $pidf"; return 0; }
  pid=$(cat "$pidf")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then log "pid $pid still alive after 30 s, SIGKILL"; kill -KILL "$pid"; fi
  fi
  rm -f "$pidf"
}

start() {
  local port=$1; shift
  local cport=$((port + 1000))
  [ -f "$LIBS/.complete" ] || { log "Kafka jars missing: run scripts/install-peers.sh"; exit 1; }
  command -v kcat >/dev/null || { log "kcat missing: run scripts/install-peers.sh"; exit 1; }
  mkdir -p "$DIR/data"
  DIR=$(cd "$DIR" && pwd)
  if [ -f "$DIR/kafka.pid" ] && kill -0 "$(cat "$DIR/kafka.pid")" 2>/dev/null; then
    log "already running (pid $(cat "$DIR/kafka.pid"))"; exit 1
  fi
  cat > "$DIR/server.properties" <<P
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$DIR/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
P
  local kv
  for kv in "$@"; do echo "$kv" >> "$DIR/server.properties"; done
  cat > "$DIR/log4j2.properties" <<'L'
status = error
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
L
  local jvm=(-cp "$LIBS/*" -Dlog4j2.configurationFile="$DIR/log4j2.properties"
    -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -Dorg.slf4j.simpleLogger.logFile=System.err)
  if [ ! -f "$DIR/data/meta.properties" ]; then
    java -Xmx256m "${jvm[@]}" kafka.tools.StorageTool format --standalone \
      --cluster-id "$(java -Xmx256m "${jvm[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)" \
      --config "$DIR/server.properties" > "$DIR/format.out" 2>&1 \
      || { log "storage format failed:"; cat "$DIR/format.out" >&2; exit 1; }
  fi
  # shellcheck disable=SC2086
  setsid java ${KAFKA_HEAP:--Xmx1g -Xms1g} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -Djava.awt.headless=true "${jvm[@]}" \
    kafka.Kafka "$DIR/server.properties" > "$DIR/kafka.out" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid" > "$DIR/kafka.pid"
  local deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-60}))
  while [ $SECONDS -lt $deadline ]; do
    kill -0 "$pid" 2>/dev/null || { log "kafka exited; tail of $DIR/kafka.out:"; tail -20 "$DIR/kafka.out" >&2; rm -f "$DIR/kafka.pid"; exit 1; }
    if timeout 5 kcat -b "127.0.0.1:$port" -L -m 3 2>/dev/null | grep -q 'brokers:'; then
      log "up on 127.0.0.1:$port (pid $pid, dir $DIR)"; return 0
    fi
    sleep 0.5
  done
  log "not answering Metadata on $port after ${KAFKA_START_TIMEOUT:-60} s"; stop; exit 1
}

case "$cmd" in
  start) [ $# -ge 3 ] || { echo "usage: $0 start DIR PORT [key=value ...]" >&2; exit 2; }
         shift 2; start "$@" ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop DIR [PORT] [key=value ...]" >&2; exit 2 ;;
esac
