#!/bin/bash
# Peak RSS, wall and CPU (/usr/bin/time) of one ibs binary's full backup, no-change backup,
# changed backup (only when DAY_CMD is set: it is run first, e.g. `gen_scale.py … --day 1`) and
# restore of the last backup, DATASET into a fresh repository under WORK (deleted first). Page cache
# dropped before each step (needs root). Prints one line per step: the time figures, the load
# average, the repository size after the step (bytes) and, for the restore, the files restored.
# usage: [DAY_CMD='python3 bench/gen_scale.py DATASET --point 1m --day 1'] \
#        bench/rss_steps.sh BIN TAG DATASET [WORK]
set -u
BIN=$1; TAG=$2; DS=$3; W=${4:-bench/work/scale/rss-$TAG}
rm -rf "$W"; mkdir -p "$W/repo"
export IBS_PFX_PASSWORD=$(head -c 18 /dev/urandom | base64) IBS_STATE_DIR=$W/state
"$BIN" cert new --subject rss --cer "$W/c.cer" --pfx "$W/c.pfx" --bits 2048 >/dev/null
"$BIN" repo init --repo "$W/repo" --cert "$W/c.cer" --state "$W/state" >/dev/null
T="/usr/bin/time -f %e_wall_s_%U_user_%S_sys_%M_maxrss_kib"
steps="full nochange"
[ -n "${DAY_CMD:-}" ] && steps="$steps changed"
last=
for step in $steps; do
  [ "$step" = changed ] && { $DAY_CMD >"$W/day.out" 2>&1 || { echo "DAY_CMD failed"; exit 1; }; }
  sync; echo 3 > /proc/sys/vm/drop_caches
  $T "$BIN" repo backup --repo "$W/repo" --state "$W/state" --source "data=$DS" > "$W/$step.out" 2>"$W/$step.err"
  echo "$TAG $step $(tail -1 "$W/$step.err") load=$(cut -d' ' -f1 /proc/loadavg) repo=$(du -sb "$W/repo" | cut -f1)"
  last=$step
done
ID=$(grep -E "^[0-9]{8}T[0-9]{6}Z-" "$W/$last.out" | tail -1)
sync; echo 3 > /proc/sys/vm/drop_caches
$T "$BIN" repo restore --repo "$W/repo" --backup "$ID" --target "$W/r" --pfx "$W/c.pfx" > "$W/restore.out" 2>"$W/restore.err"
echo "$TAG restore $(tail -1 "$W/restore.err") load=$(cut -d' ' -f1 /proc/loadavg) files=$(find "$W/r" -type f | wc -l)"
rm -rf "$W/r"
