#!/usr/bin/env bash
# Builds and runs every cargo-fuzz target in fuzz/ for SECONDS each (default 20), starting from the
# committed seed corpus (fuzz/corpus/<target>/), and fails on any crash, leak, timeout or OOM.
#
#   scripts/fuzz.sh            # CI mode: 20 s per target
#   scripts/fuzz.sh 600        # long mode: 10 min per target
#   FUZZ_TARGETS="pack index" scripts/fuzz.sh 60
#
# The machine's toolchain is stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly flags. The
# sanitizer defaults to address; FUZZ_SANITIZER=none builds without it (libFuzzer's coverage guidance
# still applies) where -Zsanitizer is unavailable. Builds go to ~/.cache/ibs/fuzz-target (FUZZ_TARGET_DIR
# overrides). New inputs found during a run go to fuzz-corpus/<target>/ beside that folder (not
# committed); crashes go to fuzz/artifacts/<target>/. Prints executions per target.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-20}"
SANITIZER="${FUZZ_SANITIZER:-address}"
# The sanitizer build of every dependency is the slow part: it is kept in a per-user cache outside
# the checkout, so a later run (another clone, CI on the same machine) rebuilds only what changed.
TARGET_DIR="${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ibs/fuzz-target}"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

cd fuzz
TARGETS="${FUZZ_TARGETS:-$(cargo fuzz list)}"
if [ -z "${FUZZ_TARGETS:-}" ]; then
  cargo fuzz build --sanitizer "$SANITIZER" --target-dir "$TARGET_DIR"
else
  for t in $TARGETS; do cargo fuzz build --sanitizer "$SANITIZER" --target-dir "$TARGET_DIR" "$t"; done
fi

status=0
summary=""
for t in $TARGETS; do
  work="$TARGET_DIR/../fuzz-corpus/$t"
  mkdir -p "$work" "artifacts/$t"
  log="$TARGET_DIR/fuzz-$t.log"
  if cargo fuzz run --sanitizer "$SANITIZER" --target-dir "$TARGET_DIR" "$t" "$work" "corpus/$t" -- \
      -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=5 -max_len=65536 \
      -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    status=1
    tail -40 "$log"
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
  summary+=$(printf '%-18s %-7s %12s execs %8s/s  cov %s' "$t" "$result" "$execs" "$rate" "$cov")$'\n'
done
echo
echo "fuzz: ${SECONDS_PER_TARGET}s per target, sanitizer $SANITIZER"
printf '%s' "$summary"
exit $status
