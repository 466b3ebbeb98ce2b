#!/bin/bash
# One full backup of a tree by the first binary, then ROUNDS rounds of: a cold `find -printf` stat
# walk, and a no-change backup by each binary in turn into the same repository and state; the
# page cache dropped before each. As root (drop_caches).
#   DATA=/work/scale-data/600k bench/nochange_ab.sh ROUNDS BIN_A BIN_B …
set -u
DATA=${DATA:?set DATA to the tree to back up}
WORK=${WORK:-/tmp/ibs-nochange-ab}
ROUNDS=$1; shift
rm -rf "$WORK"; mkdir -p "$WORK/repo"; d=$WORK
IBS_PFX_PASSWORD=$(head -c 18 /dev/urandom | base64); export IBS_PFX_PASSWORD
run() { # label binary
  sync; echo 3 > /proc/sys/vm/drop_caches
  /usr/bin/time -f "$1: wall %e s user %U sys %S rss %M KiB" \
    "$2" repo backup --repo "$d/repo" --state "$d/state" --source "data=$DATA" > "$d/out" 2> "$d/err"
  tail -1 "$d/err"
}
"$1" cert new --subject ab --cer "$d/c.cer" --pfx "$d/c.pfx" --bits 2048 >/dev/null 2>&1
"$1" repo init --repo "$d/repo" --cert "$d/c.cer" --state "$d/state" >/dev/null 2>&1
run "full by $(basename "$1")" "$1"
for r in $(seq 1 "$ROUNDS"); do
  sync; echo 3 > /proc/sys/vm/drop_caches
  /usr/bin/time -f "round $r stat walk: wall %e s" find "$DATA" -printf "%s %T@ %i\n" > /dev/null 2> "$d/ferr"
  tail -1 "$d/ferr"
  for b in "$@"; do run "round $r $(basename "$b")" "$b"; done
done
