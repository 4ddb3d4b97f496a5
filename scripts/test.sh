#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the real peers (kcat, Apache Kafka
# tools, Python clients), builds kopd, then runs the Rust, Java and Python suites.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n=== %s\n' "$*" >&2; }

step "installing peers"
bash scripts/install-peers.sh

step "building kopd (release)"
cargo build --release --locked

step "Rust: unit and integration tests"
cargo test --release --locked

step "Java: Kafka AdminClient and CLI tools against kopd"
mvn -q -B -Dstyle.color=never -f tests/java/pom.xml test -Dkopd.bin="$PWD/target/release/kopd"

step "Bench harness smoke runs"
bash bench/throughput.sh --records 20000 --partitions 4 --cores 2
python3 bench/compare.py --quick --no-build

step "Python: kcat and confluent-kafka against kopd"
KOPD_BIN="$PWD/target/release/kopd" python3 -m pytest -q tests/python

# The same durable-log, group, cursor and crash suites again with kopd on BookKeeper: one
# local ZooKeeper + 3 bookies for the pass (each kopd gets its own ZooKeeper chroot, see
# tests/common/mod.rs `backend_args`), E/Qw/Qa = 2/2/2 as Pulsar's defaults. Tests of the
# bookkeeper backend's faults start clusters of their own (tests/bookkeeper_*.rs, above).
step "BookKeeper backend: starting ZooKeeper and 3 bookies"
BK_DIR="$PWD/.peers/run/test-bk"
BK_ZK_PORT="${KOPD_TEST_BK_ZK_PORT:-22181}"
bash scripts/bookkeeper-cluster.sh start --fresh --dir "$BK_DIR" --zk-port "$BK_ZK_PORT" \
  --bookies 3 --bookie-port "${KOPD_TEST_BK_BOOKIE_PORT:-23181}" --owner-pid $$ >/dev/null
trap 'bash scripts/bookkeeper-cluster.sh stop --dir "$BK_DIR" || true' EXIT
export KOPD_TEST_STORAGE=bookkeeper KOPD_TEST_ZK="127.0.0.1:$BK_ZK_PORT"

step "BookKeeper backend: Rust durable-log, group and cursor suites"
cargo test --release --locked --test data_path --test large_batches --test groups --test cursors

step "BookKeeper backend: Java producer/consumer, restarts and groups"
mvn -q -B -Dstyle.color=never -f tests/java/pom.xml test -Dkopd.bin="$PWD/target/release/kopd" \
  -Dtest='ProduceConsumeTest,RestartTest,GroupsTest'

step "BookKeeper backend: Python crash, idempotence and groups (confluent-kafka, kcat)"
KOPD_BIN="$PWD/target/release/kopd" python3 -m pytest -q tests/python/test_crash.py \
  tests/python/test_confluent_idempotent.py tests/python/test_groups.py

bash scripts/bookkeeper-cluster.sh stop --dir "$BK_DIR"
trap - EXIT
step "all suites passed"
