#!/bin/bash
# Full backups of $DATA by each variant in turn, each into a fresh repository, the page cache dropped
# before each, with the machine's CPU split (/proc/stat) over each run. As root (drop_caches).
#   DATA=/work/scale-data/600k [KEEP=1] bench/full_ab.sh ROUNDS "NAME|ENV=V ENV2=V|BINARY" …
# KEEP=1 keeps every repository until the end (ext4 slows file creation for minutes after a large
# delete: "Deleted trees and ext4" in bench/README.md); the work folder is $WORK.
set -u
DATA=${DATA:?}; WORK=${WORK:-/work/ab-work}; ROUNDS=$1; shift
rm -rf "$WORK"; mkdir -p "$WORK"
IBS_PFX_PASSWORD=$(head -c 18 /dev/urandom | base64); export IBS_PFX_PASSWORD
cpu() { awk '/^cpu /{print $2+$3, $4, $5, $6, $9}' /proc/stat; }
for r in $(seq 1 "$ROUNDS"); do
  for v in "$@"; do
    IFS='|' read -r name envs b <<<"$v"
    d=$WORK/$name-$r; mkdir -p "$d/repo"
    "$b" cert new --subject ab --cer "$d/c.cer" --pfx "$d/c.pfx" --bits 2048 >/dev/null 2>&1
    "$b" repo init --repo "$d/repo" --cert "$d/c.cer" --state "$d/state" >/dev/null 2>&1
    sync; echo 3 > /proc/sys/vm/drop_caches; sleep 2
    c0=$(cpu)
    env $envs /usr/bin/time -f "$name round $r: wall %e s user %U sys %S rss %M KiB" \
      "$b" repo backup --repo "$d/repo" --state "$d/state" --source "data=$DATA" > "$d/out" 2> "$d/err"
    c1=$(cpu)
    tail -1 "$d/err"
    python3 -c "
a='$c0'.split();b='$c1'.split();d=[int(y)-int(x) for x,y in zip(a,b)];t=sum(d)
print('   cpu%%: user %.0f sys %.0f idle %.0f iowait %.0f steal %.0f'%tuple(100*x/t for x in d))"
    du -sm "$d/repo" | awk '{print "   repo MiB", $1}'
    [ -n "${KEEP:-}" ] || { rm -rf "$d/repo" "$d/state"; sync; }
  done
done
