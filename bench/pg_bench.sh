#!/usr/bin/env bash
# The PostgreSQL component bench (issue "Infrastructure components", item 6):
#   1. a pgbench database of about 1 GB (pgbench -i -s SCALE, default 70) on the local server;
#   2. baseline: `pg_dump DB | zstd -1 > FILE`, page cache dropped first;
#   3. ibs: `ibs serve` with one `postgres` component for that database; the daemon's first backup
#      (taken at its first start, page cache dropped just before), duration from the job record;
#   4. 1 % of the pgbench_accounts rows change, in two ways, each followed by a backup:
#      scattered (every 100th aid, as pgbench's own workload spreads its updates) and
#      contiguous (one block of 1 % of the aids); the bytes each backup stored are compared with
#      what the first backup stored.
# Prints one table. Needs root (drop_caches) and the local PostgreSQL server (scripts/ensure-services.sh).
# Usage: bench/pg_bench.sh [SCALE]
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${1:-70}
bash scripts/ensure-services.sh >/dev/null
command -v pgbench >/dev/null || { echo "pgbench is missing (Debian: postgresql-contrib or postgresql-client)" >&2; exit 1; }
command -v zstd >/dev/null || apt-get install -y zstd >/dev/null
cargo build --release -q -p ibs
B=$PWD/target/release/ibs
W=$(mktemp -d /tmp/ibs-pg-bench.XXXXXX)
DB=ibs_pgbench
PGU=postgres
psql_() { psql -U "$PGU" -h 127.0.0.1 -X -q -v ON_ERROR_STOP=1 "$@"; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
cleanup() {
  [ -n "${SERVE_PID:-}" ] && kill "$SERVE_PID" 2>/dev/null || true
  psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT

echo "bench: pgbench -i -s $scale (about $((scale * 15)) MB) ..." >&2
psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null
psql_ -d postgres -c "CREATE DATABASE $DB" >/dev/null
pgbench -U "$PGU" -h 127.0.0.1 -i -q -s "$scale" "$DB" >/dev/null 2>&1
db_bytes=$(psql_ -d "$DB" -At -c "SELECT pg_database_size('$DB')")
rows=$(psql_ -d "$DB" -At -c "SELECT count(*) FROM pgbench_accounts")

drop
t0=$(date +%s.%N)
pg_dump -U "$PGU" -h 127.0.0.1 "$DB" | zstd -1 -q > "$W/dump.sql.zst"
t1=$(date +%s.%N)
base_s=$(echo "$t1 - $t0" | bc)
base_bytes=$(stat -c %s "$W/dump.sql.zst")

mkdir -p "$W/repo"
cat > "$W/ibs.toml" <<EOF
[[component]]
name = "pg"
kind = "postgres"
url = "postgresql://$PGU@127.0.0.1:5432/$DB"
EOF
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# On its first start the daemon takes the first backup at once: that one is measured (cold cache).
drop
IBS_LOG=warn "$B" serve --config "$W/ibs.toml" --data "$W/data" --listen "127.0.0.1:$port" >"$W/serve.log" 2>&1 &
SERVE_PID=$!
export IBS_SERVER="http://127.0.0.1:$port"
for _ in $(seq 1 300); do "$B" token create --role admin --data "$W/data" >"$W/token" 2>/dev/null && break; sleep 0.2; done
export IBS_TOKEN=$(tail -n 1 "$W/token")
job_fields='import json,sys
j=json.load(sys.stdin)
j=j[-1] if isinstance(j,list) else j
print(j.get("duration_ms") or 0, j.get("bytes_stored",0), j["status"])'
first=""
for _ in $(seq 1 1200); do
  first=$("$B" backup list --json 2>/dev/null | python3 -c 'import json,sys
v=[j for j in json.load(sys.stdin) if j["status"] not in ("Running","Queued","Skipped")]
v and print(json.dumps(v[0]))' || true)
  [ -n "$first" ] && break
  sleep 0.5
done
[ -n "$first" ] || { echo "the first backup did not finish; see $W/serve.log" >&2; exit 1; }
read -r first_ms first_bytes first_status < <(echo "$first" | python3 -c "$job_fields")
first_s=$(echo "$first_ms / 1000" | bc -l)
backup() { # prints "wall_s bytes_stored status"
  drop
  "$B" backup start --wait --json | python3 -c "$job_fields" | awk '{print $1/1000, $2, $3}'
}
aids=$((rows / 100))
psql_ -d "$DB" -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0" >/dev/null
read -r scat_s scat_bytes scat_status < <(backup)
psql_ -d "$DB" -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= $aids" >/dev/null
read -r cont_s cont_bytes cont_status < <(backup)

python3 - "$db_bytes" "$rows" "$base_s" "$base_bytes" "$first_s" "$first_bytes" "$first_status" \
  "$scat_s" "$scat_bytes" "$scat_status" "$cont_s" "$cont_bytes" "$cont_status" <<'EOF'
import sys
(db, rows, bs, bb, fs, fb, fst, ss, sb, sst, cs, cb, cst) = sys.argv[1:]
db, rows, bb, fb, sb, cb = map(int, (db, rows, bb, fb, sb, cb))
bs, fs, ss, cs = map(float, (bs, fs, ss, cs))
print(f"database {db/1e6:.0f} MB, {rows} pgbench_accounts rows")
print()
print("| step | wall s | bytes stored | vs first backup | target | result |")
print("|---|---:|---:|---:|---|---|")
print(f"| pg_dump \\| zstd -1 | {bs:.1f} | {bb} | | | |")
ok = "PASS" if fs <= 1.2 * bs and fst == "Succeeded" else "FAIL"
print(f"| ibs first backup ({fst}) | {fs:.1f} | {fb} | 1.00 | wall ≤ 1.2 × pg_dump\\|zstd ({fs/bs:.2f}×) | {ok} |")
for label, s, b, st in (("1 % rows changed, scattered (aid % 100 = 0)", ss, sb, sst),
                        ("1 % rows changed, contiguous (aid ≤ rows/100)", cs, cb, cst)):
    r = b / fb if fb else float("nan")
    print(f"| {label} ({st}) | {s:.1f} | {b} | {r:.3f} | < 0.10 | {'PASS' if r < 0.10 else 'FAIL'} |")
EOF
