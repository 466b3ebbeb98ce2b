#!/usr/bin/env bash
# Backup and restore of the bench dataset to a local folder vs an SMB share on loopback (the private
# Samba test server), same release binary, page cache dropped before every step. Prints wall and CPU
# times per round. Usage: [IBS_BIN=PATH] [IBS_DATASET=DIR] bench/smb_vs_local.sh [ROUNDS]   (default 3;
# run bench/run.sh first so the dataset exists, or point IBS_DATASET at another tree, e.g. a
# `gen_scale.py --point 600k` tree; needs root for dropping caches and for the Samba test server).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
# IBS_BIN: a release binary built elsewhere (e.g. CARGO_TARGET_DIR=/work/target-release).
if [ -z "${IBS_BIN:-}" ]; then cargo build --release -q -p ibs; fi
B=${IBS_BIN:-$PWD/target/release/ibs}
D=${IBS_DATASET:-$PWD/bench/work/dataset}
[ -d "$D" ] || { echo "no dataset at $D: run bench/run.sh first" >&2; exit 1; }
W=$(mktemp -d /tmp/ibs-smb-bench.XXXXXX)
export IBS_PFX_PASSWORD=$(head -c 12 /dev/urandom | base64)
export IBS_SHARE_PASSWORD=${IBS_TEST_SMB_PASSWORD:-S3cret!pw}
bash scripts/samba-test-server.sh start /tmp/ibs-samba 4455 >/dev/null
REGION=/tmp/ibs-samba/share/bench-smb-vs-local
"$B" cert new --subject bench --bits 2048 --cer "$W/c.cer" --pfx "$W/c.pfx" >/dev/null
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
echo "| round | target | backup s | backup CPU s | restore s | restore CPU s |"
echo "|---|---|---:|---:|---:|---:|"
for i in $(seq 1 "$rounds"); do
  for t in local smb; do
    rm -rf "$W/state" "$W/local" "$W/out" "$REGION"
    mkdir -p "$W/local" "$REGION"; chown ibsuser "$REGION"
    if [ "$t" = local ]; then LOC=$W/local; U=(); else LOC=smb://127.0.0.1:4455/backup/bench-smb-vs-local; U=(--username ibsuser); fi
    "$B" repo init --state "$W/state" --repo "$LOC" "${U[@]}" --cert "$W/c.cer" >/dev/null 2>&1
    drop
    /usr/bin/time -f "%e %U %S" -o "$W/t1" "$B" repo backup --state "$W/state" --repo "$LOC" "${U[@]}" --source data="$D" >"$W/out.txt" 2>/dev/null
    id=$(tail -n 1 "$W/out.txt")
    drop
    /usr/bin/time -f "%e %U %S" -o "$W/t2" "$B" repo restore --state "$W/state" --repo "$LOC" "${U[@]}" --backup "$id" --target "$W/out" --pfx "$W/c.pfx" >/dev/null 2>&1
    read -r bw bu bs < "$W/t1"; read -r rw ru rs < "$W/t2"
    echo "| $i | $t | $bw | $(echo "$bu + $bs" | bc) | $rw | $(echo "$ru + $rs" | bc) |"
  done
done
rm -rf "$W" "$REGION"
