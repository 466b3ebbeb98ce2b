#!/usr/bin/env bash
# The whole test suite, as CI runs it: dependencies, formatting, lints, then every test of every crate
# against real components (openssl, a private Samba smbd on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
[ -x scripts/ensure-services.sh ] && scripts/ensure-services.sh
# The SMB tests start a private smbd on loopback; stop it however the run ends.
trap 'bash scripts/samba-test-server.sh stop /tmp/ibs-samba >/dev/null 2>&1 || true' EXIT
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-fail-fast
