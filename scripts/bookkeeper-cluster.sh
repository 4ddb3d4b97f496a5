#!/usr/bin/env bash
# A local BookKeeper cluster for tests and benchmarks: one standalone ZooKeeper server and N
# bookies, all on 127.0.0.1, all state under one directory. Needs scripts/install-peers.sh.
#
#   scripts/bookkeeper-cluster.sh start  [--dir DIR] [--zk-port P] [--bookies N] [--bookie-port P]
#                                        [--zk-timeout-ms MS] [--wait-secs S] [--owner-pid PID]
#                                        [--fresh]       (wipe DIR's data first)
#   scripts/bookkeeper-cluster.sh stop   [--dir DIR]      (safe to repeat)
#   scripts/bookkeeper-cluster.sh status [--dir DIR]      (exit 0 only if everything is up)
#   scripts/bookkeeper-cluster.sh kill-bookie I | start-bookie I | pause-bookie I | resume-bookie I
#                                 | pause-zk | resume-zk [--dir DIR]
#
# Bookie I (0-based) listens on bookie-port + I. `start` prints the metadata service URI on
# stdout; everything else goes to stderr. A second `start` on a stopped DIR restarts the
# cluster with its data. With --owner-pid the cluster stops itself once that process is
# gone (a test binary killed before its Drop ran). DIR/client.conf is a BookKeeper client
# conf for this cluster (BK_CONF=DIR/client.conf .peers/bin/bkshell listbookies -rw).
# Environment: BK_HEAP (heap and direct memory per bookie, 256m), BK_GC_OPTS (the bookies' GC
# options; serial by default, small for tests: benchmarks pass G1 as BookKeeper's own scripts do),
# BK_CONF_EXTRA (lines appended to every bookie's bk.conf, e.g. another ledger storage).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ZK_HOME="$ROOT/.peers/zookeeper-3.9.5"
BK_HOME="$ROOT/.peers/bookkeeper-4.17.3"
BKSHELL="$ROOT/.peers/bin/bkshell"

DIR="$ROOT/.peers/run/bk"
ZK_PORT=2181
BOOKIES=3
BOOKIE_PORT=3181
# ZooKeeper session timeout of the bookies: how long a killed bookie stays listed. ZooKeeper
# expires sessions on its tick (200 ms here, 2 s in its sample config): a dead client's session
# ends up to one tick after its timeout, and kopd's failover waits for that.
ZK_TIMEOUT_MS=6000
WAIT_SECS=60
STOP_SECS=15
OWNER_PID=""
FRESH=0
BK_HEAP="${BK_HEAP:-256m}"
read -r -a BK_GC <<< "${BK_GC_OPTS:--XX:+UseSerialGC}"

log() { echo "bookkeeper-cluster: $*" >&2; }
die() { log "$*"; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -n 's/^# \{0,1\}//p' >&2
  exit 2
}

CMD=""
ARG=""
set_opts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR="$2"; shift 2 ;;
    --zk-port) ZK_PORT="$2"; set_opts+=(zk); shift 2 ;;
    --bookies) BOOKIES="$2"; set_opts+=(bookies); shift 2 ;;
    --bookie-port) BOOKIE_PORT="$2"; set_opts+=(bookie-port); shift 2 ;;
    --zk-timeout-ms) ZK_TIMEOUT_MS="$2"; shift 2 ;;
    --wait-secs) WAIT_SECS="$2"; shift 2 ;;
    --owner-pid) OWNER_PID="$2"; shift 2 ;;
    --fresh) FRESH=1; shift ;;
    -h|--help) usage ;;
    -*) log "unknown option $1"; usage ;;
    *)
      if [ -z "$CMD" ]; then CMD="$1"; elif [ -z "$ARG" ]; then ARG="$1"; else usage; fi
      shift ;;
  esac
done
[ -n "$CMD" ] || usage
for n in "$ZK_PORT" "$BOOKIES" "$BOOKIE_PORT" "$ZK_TIMEOUT_MS" "$WAIT_SECS" ${OWNER_PID:+"$OWNER_PID"}; do
  [[ "$n" =~ ^[0-9]+$ ]] || die "not a number: $n"
done
if [ ! -d "$DIR" ]; then
  case "$CMD" in
    start|cds-archive) mkdir -p "$DIR" ;;
    stop) log "nothing to stop in $DIR"; exit 0 ;;
    *) die "no cluster in $DIR" ;;
  esac
fi
DIR="$(cd "$DIR" && pwd)"
ENV_FILE="$DIR/cluster.env"

# Commands after `start` act on the cluster that `start` laid out, whatever flags they get.
if [ "$CMD" != start ] && [ -f "$ENV_FILE" ]; then
  # shellcheck disable=SC1090
  . "$ENV_FILE"
fi

uri() { echo "zk+hierarchical://127.0.0.1:$ZK_PORT/ledgers"; }
bookie_addr() { echo "127.0.0.1:$((BOOKIE_PORT + $1))"; }

# A pid from FILE if that process is alive and is ours (its command line names DIR), so a
# recycled pid is never signalled.
# SIGSTOP, then wait (bounded) until every thread has stopped: the signal is delivered to each
# thread as it next runs, and a caller probing at once could still get an answer.
stop_process() {
  local pid="$1" deadline=$((SECONDS + 5)) running stat state
  kill -STOP "$pid"
  while :; do
    running=0
    for stat in /proc/"$pid"/task/*/stat; do
      # The state is the field after the parenthesised command name.
      state="$(sed -n 's/^.*) \(.\).*$/\1/p' "$stat" 2>/dev/null || true)"
      if [ -n "$state" ] && [ "$state" != T ] && [ "$state" != t ]; then running=1; fi
    done
    [ "$running" = 0 ] && return 0
    [ $SECONDS -lt $deadline ] || { log "process $pid has threads still running after SIGSTOP"; return 0; }
    sleep 0.02
  done
}

live_pid() {
  local f="$1" pid
  [ -f "$f" ] || return 1
  pid="$(cat "$f" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DIR/" || return 1
  # A zombie (killed, not yet reaped by its parent) is as good as gone.
  [ "$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" != Z ] || return 1
  echo "$pid"
}

# ZooKeeper four-letter word over bash's /dev/tcp: no JVM start per poll.
zk4lw() {
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf %s "$2" >&3 && cat <&3' \
    _ "$ZK_PORT" "$1" 2>/dev/null || true
}
zk_serving() { zk4lw srvr | grep -q '^Mode: standalone'; }
# Writable bookies as "<session> <ip:port>": the ephemeral /ledgers/available/<ip:port>
# nodes and the ZooKeeper sessions that own them, from `dump`.
registrations() {
  zk4lw dump | awk '
    /^0x[0-9a-f]+:$/ { sess = substr($0, 1, length($0) - 1); next }
    /^[ \t]+\/ledgers\/available\/[0-9.]+:[0-9]+$/ {
      sub(/^[ \t]+\/ledgers\/available\//, ""); print sess, $0 }'
}
registered_rw() { registrations | awk '{print $2}' | sort -u; }
# Bookie I's registration session, empty if none.
reg_session() { registrations | awk -v a="$(bookie_addr "$1")" '$2 == a {print $1; exit}'; }

port_in_use() { timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null; }

# Runs "$@" detached (own session, no inherited fds) with its pid written to PIDFILE.
spawn() {
  local pidfile="$1" logfile="$2"
  shift 2
  rm -f "$pidfile"
  setsid bash -c 'echo $$ > "$1"; shift; exec "$@"' _ "$pidfile" "$@" \
    < /dev/null >> "$logfile" 2>&1 &
  local i
  for i in $(seq 100); do [ -s "$pidfile" ] && return 0; sleep 0.02; done
  die "could not start $*"
}

check_installed() {
  [ -f "$ZK_HOME/libs/.complete" ] && [ -f "$BK_HOME/libs/.complete" ] && [ -x "$BKSHELL" ] ||
    die "ZooKeeper/BookKeeper not installed: run scripts/install-peers.sh"
}

write_env() {
  cat > "$ENV_FILE" <<E
ZK_PORT=$ZK_PORT
BOOKIES=$BOOKIES
BOOKIE_PORT=$BOOKIE_PORT
ZK_TIMEOUT_MS=$ZK_TIMEOUT_MS
E
}

write_confs() {
  mkdir -p "$DIR/zk/data"
  cat > "$DIR/zk/zoo.cfg" <<E
tickTime=200
minSessionTimeout=400
maxSessionTimeout=60000
dataDir=$DIR/zk/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=srvr,ruok,dump,mntr,stat
E
  echo "metadataServiceUri=$(uri)" > "$DIR/client.conf"
  echo "zkTimeout=$ZK_TIMEOUT_MS" >> "$DIR/client.conf"
  local i d
  for ((i = 0; i < BOOKIES; i++)); do
    d="$DIR/bookie-$i"
    mkdir -p "$d/journal" "$d/ledgers"
    cat > "$d/bk.conf" <<E
bookiePort=$((BOOKIE_PORT + i))
advertisedAddress=127.0.0.1
listeningInterface=lo
allowLoopback=true
useHostNameAsBookieID=false
metadataServiceUri=$(uri)
zkTimeout=$ZK_TIMEOUT_MS
journalDirectories=$d/journal
ledgerDirectories=$d/ledgers
journalSyncData=true
httpServerEnabled=false
enableStatistics=false
statsProviderClass=org.apache.bookkeeper.stats.NullStatsProvider
autoRecoveryDaemonEnabled=false
# Test machines run with fuller disks than production; don't turn read-only at 95 %.
diskUsageThreshold=0.99
diskUsageWarnThreshold=0.98
${BK_CONF_EXTRA:-}
E
  done
}

start_zk() {
  # Else a foreign server on the port would answer our readiness checks.
  if port_in_use "$ZK_PORT"; then die "port $ZK_PORT is in use"; fi
  spawn "$DIR/zk.pid" "$DIR/zk.log" java -Xmx128m -XX:+UseSerialGC -Djava.net.preferIPv4Stack=true \
    -Dorg.slf4j.simpleLogger.defaultLogLevel=info -Dorg.slf4j.simpleLogger.showDateTime=true \
    -Dzookeeper.jmx.log4j.disable=true -Dzookeeper.admin.enableServer=false \
    -cp "$ZK_HOME/libs/*" org.apache.zookeeper.server.ZooKeeperServerMain "$DIR/zk/zoo.cfg"
  local deadline=$((SECONDS + WAIT_SECS))
  until zk_serving; do
    live_pid "$DIR/zk.pid" >/dev/null || { tail -n 20 "$DIR/zk.log" >&2; die "ZooKeeper exited"; }
    [ $SECONDS -lt $deadline ] || die "ZooKeeper not serving on $ZK_PORT within ${WAIT_SECS}s"
    sleep 0.1
  done
}

# The java command line of a bookie or shell: BKJ=(java ... -cp ...), then the main class.
bk_java_cmd() { # log level, extra JVM options...
  local level="$1"
  shift
  # The --add-opens let the journal use posix_fadvise and Netty/CRC32 use direct memory,
  # as BookKeeper's own launch scripts do.
  # bookie.jsa (see cds-archive) saves about half of a bookie's start-up CPU time.
  local cds=()
  if [ -n "${BK_CDS_DUMP:-}" ]; then
    cds=(-XX:ArchiveClassesAtExit="$BK_CDS_DUMP")
  elif [ -f "$BK_HOME/bookie.jsa" ]; then
    cds=(-XX:SharedArchiveFile="$BK_HOME/bookie.jsa")
  fi
  BKJ=(java "${cds[@]}" "-Xlog:cds=off,cds+dynamic=off"
    -Xmx"$BK_HEAP" -XX:MaxDirectMemorySize="$BK_HEAP" "${BK_GC[@]}" "$@"
    --add-opens java.base/java.io=ALL-UNNAMED --add-opens java.base/java.util.zip=ALL-UNNAMED
    --add-opens java.base/java.nio=ALL-UNNAMED --add-opens java.base/jdk.internal.misc=ALL-UNNAMED
    -Dio.netty.tryReflectionSetAccessible=true -Dio.netty.leakDetectionLevel=disabled
    -Djava.net.preferIPv4Stack=true -Dbk.log.level="$level"
    -Dlog4j2.configurationFile="$BK_HOME/log4j2.properties" -Dzookeeper.jmx.log4j.disable=true
    -cp "$BK_HOME/libs/*")
}

spawn_bookie() {
  local i="$1"
  [ "$i" -lt "$BOOKIES" ] || die "no bookie $i (cluster has $BOOKIES)"
  if live_pid "$DIR/bookie-$i.pid" >/dev/null; then die "bookie $i already running"; fi
  if port_in_use "$((BOOKIE_PORT + i))"; then die "port $((BOOKIE_PORT + i)) is in use"; fi
  bk_java_cmd info
  spawn "$DIR/bookie-$i.pid" "$DIR/bookie-$i.log" "${BKJ[@]}" org.apache.bookkeeper.server.Main --conf "$DIR/bookie-$i/bk.conf"
}

# Waits until bookies "$@" are registered writable by a ZooKeeper session other than
# STALE_SESSION[i] (a killed bookie's node lives on until its session expires); fails fast
# if one of them died.
declare -A STALE_SESSION=()
note_stale_sessions() {
  local i
  for i in "$@"; do STALE_SESSION[$i]="$(reg_session "$i")"; done
}
wait_bookies() {
  local deadline=$((SECONDS + WAIT_SECS)) i missing sess
  while :; do
    missing=""
    for i in "$@"; do
      sess="$(reg_session "$i")"
      if [ -z "$sess" ] || [ "$sess" = "${STALE_SESSION[$i]:-}" ]; then
        live_pid "$DIR/bookie-$i.pid" >/dev/null ||
          { tail -n 30 "$DIR/bookie-$i.log" >&2; die "bookie $i exited (log: $DIR/bookie-$i.log)"; }
        missing="$missing $i"
      fi
    done
    [ -n "$missing" ] || return 0
    [ $SECONDS -lt $deadline ] || die "bookies$missing not registered within ${WAIT_SECS}s"
    sleep 0.1
  done
}

stop_pid_file() { # pidfile: SIGTERM, then SIGKILL after STOP_SECS
  local f="$1" pid deadline
  if pid="$(live_pid "$f")"; then
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_SECS))
    while live_pid "$f" >/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    if live_pid "$f" >/dev/null; then
      log "$(basename "$f" .pid) ignored SIGTERM for ${STOP_SECS}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      while live_pid "$f" >/dev/null; do sleep 0.05; done
    fi
  fi
  rm -f "$f"
}

cmd_start() {
  check_installed
  [ "$BOOKIES" -ge 1 ] || die "--bookies must be at least 1"
  if live_pid "$DIR/zk.pid" >/dev/null; then die "a cluster is already running in $DIR (stop it first)"; fi
  if [ "$FRESH" = 1 ]; then
    rm -rf "$DIR/zk" "$DIR"/bookie-* "$DIR/.formatted" "$ENV_FILE" "$DIR"/*.log
  fi
  if [ -f "$ENV_FILE" ] && [ -f "$DIR/.formatted" ]; then
    # Restart with the data already here: the layout must not change under it.
    if [ ${#set_opts[@]} -gt 0 ]; then
      log "restarting the cluster in $DIR with its own ports and size (flags ignored)"
    fi
    # shellcheck disable=SC1090
    . "$ENV_FILE"
  fi
  local t0ns
  t0ns=$(date +%s%N)
  write_env
  write_confs
  start_zk
  local tzk tfmt
  tzk=$(date +%s%N)
  if [ ! -f "$DIR/.formatted" ]; then
    BK_CONF="$DIR/client.conf" "$BKSHELL" metaformat -nonInteractive -force \
      >> "$DIR/format.log" 2>&1 ||
      { tail -n 20 "$DIR/format.log" >&2; die "metaformat failed"; }
    touch "$DIR/.formatted"
  fi
  tfmt=$(date +%s%N)
  local i all=()
  for ((i = 0; i < BOOKIES; i++)); do all+=("$i"); done
  note_stale_sessions "${all[@]}"
  for i in "${all[@]}"; do spawn_bookie "$i"; done
  wait_bookies "${all[@]}"
  if [ -n "$OWNER_PID" ]; then
    # The trailing slash puts "$DIR/" on its command line, as live_pid wants.
    spawn "$DIR/watchdog.pid" "$DIR/watchdog.log" bash -c \
      'while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec bash "$2" stop --dir "$3"' \
      _ "$OWNER_PID" "${BASH_SOURCE[0]}" "$DIR/"
  fi
  local tend
  tend=$(date +%s%N)
  log "ZooKeeper 127.0.0.1:$ZK_PORT and $BOOKIES bookies up in $(((tend - t0ns) / 1000000)) ms" \
    "(zk $(((tzk - t0ns) / 1000000)), format $(((tfmt - tzk) / 1000000))," \
    "bookies $(((tend - tfmt) / 1000000))); client conf $DIR/client.conf"
  uri
}

cmd_stop() {
  local f wd pids=()
  # The watchdog first, unless this is the watchdog itself (it becomes this `stop`).
  if wd="$(live_pid "$DIR/watchdog.pid")" && [ "$wd" != $$ ]; then stop_pid_file "$DIR/watchdog.pid"; fi
  rm -f "$DIR/watchdog.pid"
  for f in "$DIR"/bookie-*.pid; do
    [ -e "$f" ] || continue
    stop_pid_file "$f" &
    pids+=($!)
  done
  # Only these: a plain `wait` would also wait for servers this shell started.
  [ ${#pids[@]} -eq 0 ] || wait "${pids[@]}"
  stop_pid_file "$DIR/zk.pid"
  log "stopped ($DIR)"
}

cmd_status() {
  local ok=0 pid i state
  if pid="$(live_pid "$DIR/zk.pid")"; then
    state="running"
    [ "$(awk '/^State:/ {print $2}' "/proc/$pid/status")" != T ] || state="paused"
    if [ "$state" = running ] && ! zk_serving; then state="not serving"; ok=1; fi
    [ "$state" != paused ] || ok=1
    echo "zookeeper 127.0.0.1:$ZK_PORT pid $pid $state"
  else
    echo "zookeeper 127.0.0.1:$ZK_PORT down"; ok=1
  fi
  local regs
  regs="$(registered_rw)"
  for ((i = 0; i < BOOKIES; i++)); do
    if pid="$(live_pid "$DIR/bookie-$i.pid")"; then
      if grep -qxF "$(bookie_addr "$i")" <<< "$regs"; then state="writable"; else state="not registered"; ok=1; fi
      echo "bookie $i $(bookie_addr "$i") pid $pid $state"
    else
      echo "bookie $i $(bookie_addr "$i") down"; ok=1
    fi
  done
  echo "metadataServiceUri $(uri)"
  return $ok
}

# A base port with N free ports after it, for the throw-away cluster of cds-archive.
free_port_base() {
  local n="$1" base i ok
  for _ in $(seq 50); do
    base=$((20000 + RANDOM % 40000))
    ok=1
    for ((i = 0; i < n; i++)); do
      if port_in_use $((base + i)); then ok=0; break; fi
    done
    if [ "$ok" = 1 ]; then echo "$base"; return 0; fi
  done
  die "no $n free ports"
}

# Makes $BK_HOME/bookie.jsa and shell.jsa (class-data-sharing archives) by running a
# throw-away one-bookie cluster and a shell write/read test once with class dumping on.
cmd_cds_archive() {
  check_installed
  DIR="$(mktemp -d "${TMPDIR:-/tmp}/bk-cds.XXXXXX")"
  ENV_FILE="$DIR/cluster.env"
  BOOKIES=1
  ZK_PORT="$(free_port_base 2)"
  BOOKIE_PORT=$((ZK_PORT + 1))
  local shell_jsa="$BK_HOME/shell.jsa.$$" bookie_jsa="$BK_HOME/bookie.jsa.$$"
  trap 'cmd_stop 2>/dev/null; rm -rf "$DIR"; rm -f "$BK_HOME"/*.jsa.$$' EXIT
  rm -f "$BK_HOME/bookie.jsa" "$BK_HOME/shell.jsa"
  write_env
  write_confs
  start_zk
  BK_CONF="$DIR/client.conf" "$BKSHELL" metaformat -nonInteractive -force >> "$DIR/format.log" 2>&1
  note_stale_sessions 0
  BK_CDS_DUMP="$bookie_jsa" spawn_bookie 0
  wait_bookies 0
  BK_CONF="$DIR/client.conf" BK_PEER_JAVA_OPTS="-XX:ArchiveClassesAtExit=$shell_jsa" "$BKSHELL" \
    simpletest -ensemble 1 -writeQuorum 1 -ackQuorum 1 -numEntries 10 >> "$DIR/format.log" 2>&1
  cmd_stop 2>/dev/null
  [ -s "$bookie_jsa" ] && [ -s "$shell_jsa" ] || die "the JVM wrote no archive"
  mv -f "$bookie_jsa" "$BK_HOME/bookie.jsa"
  mv -f "$shell_jsa" "$BK_HOME/shell.jsa"
  log "class-data-sharing archives in $BK_HOME"
}

need_index() { [[ "$ARG" =~ ^[0-9]+$ ]] || die "$CMD needs a bookie index"; }

case "$CMD" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  kill-bookie)
    need_index
    if pid="$(live_pid "$DIR/bookie-$ARG.pid")"; then
      kill -KILL "$pid"
      while live_pid "$DIR/bookie-$ARG.pid" >/dev/null; do sleep 0.05; done
    fi
    rm -f "$DIR/bookie-$ARG.pid"
    ;;
  start-bookie)
    need_index
    check_installed
    note_stale_sessions "$ARG"
    spawn_bookie "$ARG"
    wait_bookies "$ARG"
    ;;
  pause-bookie | resume-bookie)
    need_index
    pid="$(live_pid "$DIR/bookie-$ARG.pid")" || die "bookie $ARG is not running"
    if [ "$CMD" = pause-bookie ]; then stop_process "$pid"; else kill -CONT "$pid"; fi
    ;;
  pause-zk)
    pid="$(live_pid "$DIR/zk.pid")" || die "ZooKeeper is not running"
    stop_process "$pid"
    ;;
  cds-archive) cmd_cds_archive ;;
  resume-zk)
    pid="$(live_pid "$DIR/zk.pid")" || die "ZooKeeper is not running"
    kill -CONT "$pid"
    ;;
  *) usage ;;
esac
