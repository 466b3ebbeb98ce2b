#!/usr/bin/env bash
# API latency under load while a backup runs (issue 7, "Load"). Starts `ibs serve` on a loopback
# port with a `command` component that streams for ~40 s, starts a backup, then 50 concurrent
# clients GET /backups, /jobs, /alerts and /location for 30 s. Prints p50/p95/p99/max per endpoint
# and overall, and exits non-zero when the overall p99 is not under 100 ms or a request failed.
#
#   bench/api_load.sh                       # release build, 50 clients, 30 s
#   CLIENTS=100 DURATION=60 bench/api_load.sh
#   IBS_BIN=target/debug/ibs bench/api_load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS="${CLIENTS:-50}"
DURATION="${DURATION:-30}"
P99_MS="${P99_MS:-100}"
if [ -z "${IBS_BIN:-}" ]; then
  cargo build --release -p ibs >/dev/null
  IBS_BIN=target/release/ibs
fi
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/sample"
echo hello >"$work/sample/a"
cat >"$work/ibs.toml" <<TOML
tick_seconds = 5
[[component]]
name = "stream"
kind = "command"
# ~40 s of data, 4 MiB a second.
backup = "for i in \$(seq 40); do head -c 4194304 /dev/urandom; sleep 1; done"
TOML
"$IBS_BIN" serve --data "$work/data" --config "$work/ibs.toml" --sample "$work/sample" \
  --listen "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 900); do
  [ -f "$work/data/certs/ibs-backup.pfx.password" ] && break
  sleep 0.2
done
token=$("$IBS_BIN" token create --role operator --data "$work/data" 2>/dev/null | tail -1)
export IBS_SERVER="http://127.0.0.1:$port" IBS_TOKEN="$token"
# The first-start backup may still run; either way a backup is running once this succeeds or 409s.
for _ in $(seq 100); do
  if "$IBS_BIN" backup start >/dev/null 2>&1; then break; fi
  sleep 0.3
done
python3 - "$port" "$token" "$CLIENTS" "$DURATION" "$P99_MS" <<'PY'
import http.client, json, sys, threading, time
port, token, clients, duration, target = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
paths = ["/api/v1/backups", "/api/v1/jobs", "/api/v1/alerts", "/api/v1/location"]
lat = {p: [] for p in paths}
errors = []
running_seen = []
stop = time.monotonic() + duration
def client(n):
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
    i = n
    while time.monotonic() < stop:
        p = paths[i % len(paths)]; i += 1
        t0 = time.perf_counter()
        try:
            conn.request("GET", p, headers={"Authorization": "Bearer " + token})
            r = conn.getresponse(); body = r.read()
            dt = (time.perf_counter() - t0) * 1000
            if r.status != 200:
                errors.append((p, r.status)); continue
            lat[p].append(dt)
            if p == "/api/v1/jobs" and b'"Running"' in body:
                running_seen.append(1)
        except Exception as e:
            errors.append((p, repr(e)))
            conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
[t.start() for t in threads]; [t.join() for t in threads]
def pct(v, q):
    v = sorted(v); return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")
print(f"api_load: {clients} clients, {duration:.0f} s, a backup running ({len(running_seen)} /jobs answers showed it Running)")
print(f"{'endpoint':<20} {'requests':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
allv = []
for p in paths:
    v = lat[p]; allv += v
    print(f"{p[7:]:<20} {len(v):>9} {pct(v,.5):>8.2f} {pct(v,.95):>8.2f} {pct(v,.99):>8.2f} {max(v) if v else 0:>8.2f}")
p99 = pct(allv, .99)
print(f"{'all':<20} {len(allv):>9} {pct(allv,.5):>8.2f} {pct(allv,.95):>8.2f} {p99:>8.2f} {max(allv) if allv else 0:>8.2f}")
print(f"errors: {len(errors)} {errors[:5]}")
ok = p99 < target and not errors and running_seen
print(f"target p99 < {target:.0f} ms with a backup running: {'PASS' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY
