#!/bin/bash
# Full backups of a tree by each binary in turn, with every access time in the tree set an hour
# before its modification time first (so that under `relatime` every read would update it), the
# page cache dropped before each run. As root (drop_caches).
#   DATA=/work/scale-data/600k bench/atime_ab.sh ROUNDS BIN_A BIN_B …
set -u
DATA=${DATA:?set DATA to the tree to back up}
WORK=${WORK:-/tmp/ibs-atime-ab}
ROUNDS=$1; shift
rm -rf "$WORK"; mkdir -p "$WORK"
IBS_PFX_PASSWORD=$(head -c 18 /dev/urandom | base64); export IBS_PFX_PASSWORD
age() {
  # bottom-up, so that listing a folder never comes after its own time was set
  python3 - "$DATA" <<'PY'
import os, sys
root = sys.argv[1]
for d, dirs, files in os.walk(root, topdown=False):
    for name in files + dirs:
        p = os.path.join(d, name)
        st = os.lstat(p)
        os.utime(p, ns=(st.st_mtime_ns - 3600 * 10**9, st.st_mtime_ns), follow_symlinks=False)
st = os.lstat(root)
os.utime(root, ns=(st.st_mtime_ns - 3600 * 10**9, st.st_mtime_ns))
PY
  sync; sleep 5; sync
}
for r in $(seq 1 "$ROUNDS"); do
  for b in "$@"; do
    name=$(basename "$b"); d=$WORK/$name-$r; mkdir -p "$d/repo"
    "$b" cert new --subject ab --cer "$d/c.cer" --pfx "$d/c.pfx" --bits 2048 >/dev/null 2>&1
    "$b" repo init --repo "$d/repo" --cert "$d/c.cer" --state "$d/state" >/dev/null 2>&1
    age
    echo 3 > /proc/sys/vm/drop_caches
    /usr/bin/time -f "$name round $r: wall %e s user %U sys %S rss %M KiB" \
      "$b" repo backup --repo "$d/repo" --state "$d/state" --source "data=$DATA" > "$d/out" 2> "$d/err"
    tail -1 "$d/err"
    rm -rf "$d/repo" "$d/state"; sync
  done
done
