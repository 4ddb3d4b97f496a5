# Sourced by the perf scripts: builds kopd with a cargo profile (unless BUILD=0) and sets KOPD
# to the binary. Expects ROOT, PROFILE, BUILD and a log function.
# `profiling` = release plus full debug info (Cargo.toml), in target/profiling/.
if [ "$PROFILE" = release ]; then DIR=release; else DIR=$PROFILE; fi
if [ "$BUILD" = 1 ]; then
  log "cargo build --profile $PROFILE"
  cargo build --profile "$PROFILE" --locked -q
fi
KOPD="$ROOT/target/$DIR/kopd"
[ -x "$KOPD" ] || { echo "$KOPD missing (build it or drop --no-build)" >&2; exit 1; }
