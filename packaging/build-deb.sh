#!/usr/bin/env bash
# Builds the Debian package ibs_VERSION-1_ARCH.deb from an ibs binary that is already built: it
# compiles nothing. The binary itself writes the man pages (`ibs manpage`) and the bash, zsh and
# fish completions (`ibs completions`) into TARGET/PROFILE_DIR/deb-assets, then
# `cargo deb --no-build` packs them with the binary, packaging/ibs.service, packaging/ibs.toml
# (/etc/ibs/ibs.toml), docs/examples/ibs.toml and the maintainer scripts in packaging/debian (metadata: crates/ibs/Cargo.toml,
# [package.metadata.deb]). Needs cargo-deb (scripts/ensure-deps.sh installs it).
#
#   packaging/build-deb.sh [PROFILE] [OUT_DIR]
#     PROFILE  release (default; build first with `cargo build --release -p ibs`) or dev (the
#              tests package the debug build they already have)
#     OUT_DIR  where the .deb goes (default TARGET/debian); its path is printed last
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-release}
target=${CARGO_TARGET_DIR:-target}
out=${2:-$target/debian}
case $profile in
  dev | test) dir=debug ;;
  bench) dir=release ;;
  *) dir=$profile ;;
esac
bin=$target/$dir/ibs
if [ ! -x "$bin" ]; then
  echo "build-deb: $bin is missing: build it first (cargo build -p ibs, or --release)" >&2
  exit 1
fi
command -v cargo-deb >/dev/null || { echo "build-deb: cargo-deb is missing: run scripts/ensure-deps.sh" >&2; exit 1; }

assets=$target/$dir/deb-assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
"$bin" -q manpage --dir "$assets/man" >/dev/null
gzip -9n "$assets"/man/*.1
"$bin" completions bash >"$assets/completions/ibs.bash"
"$bin" completions zsh >"$assets/completions/_ibs"
"$bin" completions fish >"$assets/completions/ibs.fish"

# A test package is thrown away after the test: compress it fast.
fast=()
[ "$dir" = debug ] && fast=(--fast)
mkdir -p "$out"
cargo deb -p ibs --no-build --profile "$profile" --output "$out" --quiet "${fast[@]}" | tail -n 1
