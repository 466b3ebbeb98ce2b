#!/bin/bash
# Repository growth per backup (issue 18 item 2, ADR 0038): a full backup of DATASET into a fresh
# repository under WORK (deleted first), a no-change backup, then DAY_CMD (e.g.
# `gen_scale.py … --day 1`, when set), a changed backup and another no-change backup (the steady
# state after a change: with reference deltas it lists the changed backup's delta segments). Prints, per step, the repository size
# after it and its growth (`du -sb`, lock objects excluded), the reference segments (`refs/`)
# on storage and added, and the size of the step's manifest. Sizes do not depend on the build type,
# so a debug binary measures the same bytes as a release one.
# usage: [DAY_CMD='python3 bench/gen_scale.py DATASET --point 1m --day 1'] \
#        bench/refs_growth.sh BIN DATASET [WORK]
set -eu
BIN=$1; DS=$2; W=${3:-bench/work/refs-growth}
rm -rf "$W"; mkdir -p "$W/repo"
export IBS_PFX_PASSWORD=$(head -c 18 /dev/urandom | base64)
"$BIN" cert new --subject growth --cer "$W/c.cer" --pfx "$W/c.pfx" --bits 2048 >/dev/null
"$BIN" repo init --repo "$W/repo" --cert "$W/c.cer" --state "$W/state" >/dev/null
M="$W/repo/MASBackup"
size() { du -sb --exclude=locks "$M" | cut -f1; }
segs() { find "$M/refs" -type f 2>/dev/null | wc -l; }
steps="full nochange"
[ -n "${DAY_CMD:-}" ] && steps="$steps changed nochange2"
before=$(size); sb=$(segs)
printf '%-9s %14s %12s %6s %6s %10s %7s\n' step repo_bytes growth refs new_refs manifest wall_s
for step in $steps; do
  [ "$step" = changed ] && { $DAY_CMD >"$W/day.out" 2>&1 || { echo "DAY_CMD failed"; exit 1; }; }
  t0=$(date +%s.%N)
  "$BIN" repo backup --repo "$W/repo" --state "$W/state" --source "data=$DS" >"$W/$step.out" 2>"$W/$step.err"
  t1=$(date +%s.%N)
  id=$(grep -E "^[0-9]{8}T[0-9]{6}Z-" "$W/$step.out" | tail -1)
  after=$(size); sa=$(segs)
  printf '%-9s %14d %12d %6d %6d %10d %7.1f\n' "$step" "$after" $((after - before)) "$sa" $((sa - sb)) \
    "$(stat -c %s "$M/backups/$id")" "$(echo "$t1 - $t0" | bc)"
  before=$after; sb=$sa
done
