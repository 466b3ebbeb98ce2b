#!/usr/bin/env bash
# The main job on embedded defaults, end to end, in a scratch folder: make a certificate, create a
# repository, back up a sample folder twice (the second stores only what changed), list, verify and
# restore with the .pfx, and compare. Pass a folder to back up that instead of the sample.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ibs
# The binary cargo built: honours CARGO_TARGET_DIR (absolute or relative to the workspace).
target_dir=${CARGO_TARGET_DIR:-target}
case $target_dir in /*) ;; *) target_dir=$PWD/$target_dir ;; esac
ibs=$target_dir/release/ibs
work=${IBS_QUICKSTART_DIR:-$(mktemp -d /tmp/ibs-quickstart.XXXXXX)}
mkdir -p "$work"
src=${1:-$work/sample}
if [ -z "${1:-}" ]; then
  mkdir -p "$src/etc/pki" "$src/var/log"
  for i in $(seq 1 50); do printf 'setting_%d = value %d\n' "$i" "$i" >> "$src/etc/app.conf"; done
  head -c 4000000 /dev/urandom > "$src/var/lib.bin"
  seq 1 200000 | sed 's/^/2026-11-26T12:00:00Z INFO request id=/' > "$src/var/log/app.log"
  ln -sf ../etc/app.conf "$src/var/app.conf"
fi
export IBS_STATE_DIR=$work/state
# A random .pfx password for this demo; in production keep the .pfx and its password off this host.
export IBS_PFX_PASSWORD=$(head -c 18 /dev/urandom | base64)
printf '%s\n' "$IBS_PFX_PASSWORD" > "$work/backup.pfx.password"; chmod 600 "$work/backup.pfx.password"
mkdir -p "$work/share"
[ -f "$work/backup.cer" ] || "$ibs" cert new --subject "ibs quickstart" --bits 3072 --cer "$work/backup.cer" --pfx "$work/backup.pfx"
[ -d "$work/share/MASBackup" ] || "$ibs" repo init --repo "$work/share" --cert "$work/backup.cer"
id1=$("$ibs" repo backup --repo "$work/share" --source sample="$src" | tail -n 1)
echo "change" >> "$src/etc/app.conf" 2>/dev/null || true
id2=$("$ibs" repo backup --repo "$work/share" --source sample="$src" | tail -n 1)
"$ibs" repo list --repo "$work/share"
"$ibs" repo check --repo "$work/share" --read-data --pfx "$work/backup.pfx" --pfx-password-file "$work/backup.pfx.password"
rm -rf "$work/restore"
"$ibs" repo restore --repo "$work/share" --backup "$id2" --target "$work/restore" --pfx "$work/backup.pfx"
diff -r "$src" "$work/restore/sample" && echo "restore of $id2 is identical to the source"
echo
echo "Everything is in $work: repository $work/share/MASBackup, writer state $work/state."
echo "NOTICE: $work/backup.pfx is the private key. In production it must never stay on the backup host."
echo "List backups: IBS_STATE_DIR=$work/state $ibs repo list --repo $work/share"
echo "Web console and API: \"$ibs\" serve --data \"$work/controller\" starts the backup controller and prints the console's URL (sign in with the admin token it prints)."
