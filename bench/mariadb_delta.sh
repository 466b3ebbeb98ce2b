#!/usr/bin/env bash
# Delta chunks on a MariaDB export (ADR 0007): a table of ROWS rows (default 300000) dumped with
# mariadb-dump's default multi-row INSERTs into `ibs repo backup --source db=-`, then 1 % of the rows
# updated, scattered (id % 100 = 0), dumped and backed up again. Prints the bytes each backup stored
# and checks that the second restores byte-identical to the second dump.
# Needs the local MariaDB server (scripts/ensure-services.sh). Usage: bench/mariadb_delta.sh [ROWS]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-300000}
bash scripts/ensure-services.sh >/dev/null
B=${IBS_BIN:-$PWD/target/release/ibs}
[ -x "$B" ] || cargo build --release -q -p ibs
W=$(mktemp -d /tmp/ibs-maria-delta.XXXXXX)
DB=ibs_delta_bench
cleanup() { mariadb -uroot -e "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true; rm -rf "$W"; }
trap cleanup EXIT
mariadb -uroot -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB; USE $DB;
  CREATE TABLE acc (id INT PRIMARY KEY, bal INT, note VARCHAR(80));
  INSERT INTO acc SELECT seq, 0, MD5(seq) FROM seq_1_to_$rows;"
export IBS_PFX_PASSWORD=bench
cd "$W"
"$B" cert new --subject CN=bench --cer c.cer --pfx c.pfx --bits 2048 >/dev/null 2>&1
mkdir r && "$B" repo init --repo r --cert c.cer --state st >/dev/null
dump() { mariadb-dump -uroot --single-transaction --order-by-primary --skip-dump-date "$DB"; }
# `--json` prints the report, then the backup id as the last line.
stored() { python3 -c 'import sys,json; t=sys.stdin.read(); print(json.loads(t[:t.rindex("}")+1])["catalog"]["bytes_stored"])'; }
dump > d1.sql
first=$("$B" repo backup --repo r --state st --source db=- --json -q < d1.sql | stored)
mariadb -uroot -e "UPDATE $DB.acc SET bal = bal + 17 WHERE id % 100 = 0"
dump > d2.sql
second=$("$B" repo backup --repo r --state st --source db=- --json -q < d2.sql | stored)
id=$("$B" repo list --repo r --json | python3 -c 'import sys,json; print(max(b["backup_id"] for b in json.load(sys.stdin)))')
"$B" repo restore --repo r --backup "$id" --source db --target out --pfx c.pfx -q >/dev/null
cmp -s out/* d2.sql && restored=identical || restored=DIFFERENT
python3 - "$(stat -c %s d1.sql)" "$first" "$second" "$restored" <<'PY'
import sys
dump, first, second, restored = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
r = second / first
print(f"mariadb-dump {dump} bytes; first backup stored {first}; after 1 % scattered updates {second} ({r:.3f} of the first, target < 0.10: {'PASS' if r < 0.10 else 'FAIL'}); restore {restored}")
PY
