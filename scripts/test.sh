#!/usr/bin/env bash
# The whole test suite, as CI runs it: dependencies, formatting, lints, then every test of every crate
# against real components (openssl, a private Samba smbd on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-fail-fast
