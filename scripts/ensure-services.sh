#!/usr/bin/env bash
# Makes sure the database servers the component tests run against are up: PostgreSQL (5432),
# MariaDB (3306) and Redis (6379) on 127.0.0.1. Idempotent: a server that answers is left alone;
# one that does not is started and waited for (up to ~30 s). Exits nonzero, naming the server, if
# one cannot be started: the tests then FAIL, they never skip.
set -uo pipefail

wait_for() { # NAME CHECK-COMMAND...
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "ensure-services: $name did not start within 30 s" >&2
  return 1
}

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
maria_up() { mariadb-admin --protocol=tcp -h 127.0.0.1 -P 3306 -u root ping; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

status=0
if ! pg_up >/dev/null 2>&1; then
  echo "ensure-services: starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
  wait_for PostgreSQL pg_up || status=1
fi
if ! maria_up >/dev/null 2>&1; then
  echo "ensure-services: starting MariaDB" >&2
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  wait_for MariaDB maria_up || status=1
fi
if ! redis_up; then
  echo "ensure-services: starting Redis" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
  wait_for Redis redis_up || status=1
fi
exit $status
