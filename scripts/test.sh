#!/usr/bin/env bash
# The whole test suite, as CI runs it: dependencies, formatting, lints, every test of every crate
# against real components (openssl, a private Samba smbd on loopback, PostgreSQL, MariaDB, Redis),
# the fuzz targets for a bounded time, and the API load check.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
[ -x scripts/ensure-services.sh ] && scripts/ensure-services.sh
# The SMB tests start a private smbd on loopback, the S3 tests a throw-away Ceph cluster with its
# RADOS Gateway; stop them however the run ends.
trap 'bash scripts/samba-test-server.sh stop /tmp/ibs-samba >/dev/null 2>&1 || true
bash scripts/ceph-rgw.sh stop /tmp/ibs-rgw >/dev/null 2>&1 || true' EXIT
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The S3 tests (ibs_testing::rgw) use this gateway; they start it themselves when it is not running.
export IBS_TEST_RGW_DIR=/tmp/ibs-rgw
bash scripts/ceph-rgw.sh start "$IBS_TEST_RGW_DIR" >/dev/null
# One process per test and test binaries side by side (cargo-nextest); the suite has no doctests
# that run (its code blocks in docs are diagrams), so none are lost.
cargo nextest run --workspace --locked --no-fail-fast
# Every fuzz target for a bounded time from the committed corpus (long mode: scripts/fuzz.sh 600).
scripts/fuzz.sh 10
# API latency while a backup runs: p99 under 100 ms for 50 clients over 30 s (on the test build).
IBS_BIN=target/debug/ibs bench/api_load.sh
