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
