#!/usr/bin/env bash
# The cost of a certificate rotation (ADR 0013): the first backup after `ibs repo set-cert` seals
# again every chunk it shares with older backups. Backs up a test tree (16 × 4 MiB random files and
# 200 small ones) to a local folder: first backup, unchanged backup, unchanged backup right after
# set-cert, the one after it, then a prune. Prints what each stored, the repository size and the
# wall time. Usage: bench/rotation.sh   (IBS_BIN=path/to/ibs, default target/debug/ibs).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${IBS_BIN:-$PWD/target/debug/ibs}
W=$(mktemp -d /tmp/ibs-rotation.XXXXXX)
trap 'rm -rf "$W"' EXIT
export IBS_PFX_PASSWORD=bench-rotation
mkdir -p "$W/tree/small" "$W/repo"
for i in $(seq 1 16); do head -c 4194304 /dev/urandom >"$W/tree/big$i.bin"; done
for i in $(seq 1 200); do echo "setting $i = value $i" >"$W/tree/small/f$i.conf"; done
for c in old new; do
  "$B" cert new --subject "bench $c" --bits 2048 --cer "$W/$c.cer" --pfx "$W/$c.pfx" >/dev/null
done
R=(--state "$W/state" --repo "$W/repo")
"$B" repo init "${R[@]}" --cert "$W/old.cer" >/dev/null
echo "| backup | stored (MiB) | repository (MiB) | time (s) |"
echo "|---|---:|---:|---:|"
step() {
  /usr/bin/time -f "%e" -o "$W/t" "$B" repo backup "${R[@]}" --json --source data="$W/tree" >"$W/out" 2>/dev/null
  stored=$(head -n 1 "$W/out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["catalog"]["bytes_stored"])')
  repo=$(du -sb "$W/repo" | cut -f1)
  printf '| %s | %.1f | %.1f | %s |\n' "$1" "$(echo "$stored/1048576" | bc -l)" "$(echo "$repo/1048576" | bc -l)" "$(cat "$W/t")"
}
step "first backup"
step "unchanged, same certificate"
"$B" repo set-cert "${R[@]}" --cert "$W/new.cer" >/dev/null
step "unchanged, first after set-cert"
step "unchanged, second after set-cert"
"$B" repo prune "${R[@]}" --delete-delay-hours 0 >/dev/null
printf '| after prune | - | %.1f | - |\n' "$(echo "$(du -sb "$W/repo" | cut -f1)/1048576" | bc -l)"
last=$(head -n 1 "$W/out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["catalog"]["backup_id"])')
"$B" repo restore "${R[@]}" --backup "$last" --target "$W/out-tree" --pfx "$W/new.pfx" >/dev/null
diff -r "$W/tree" "$W/out-tree/data" && echo "the last backup restored with the new .pfx alone"
