#!/usr/bin/env bash
# Installs what the test suite needs, idempotently: openssl (certificate interop tests), Samba and
# smbclient (the SMB share tests run a private smbd on loopback), acl (setfacl/getfacl) and
# libcap2-bin (setcap/getcap) for the metadata-fidelity tests, Ceph's monitor, OSD, RADOS Gateway and
# CLI plus curl (the S3 tests run a throw-away cluster on loopback, scripts/ceph-rgw.sh), chromium,
# chromium-driver and selenium (PyPI) for the web console's browser tests, and openapi-spec-validator
# (PyPI) for the API document's test, and systemd-analyze (the service unit's check), fuse3
# (fusermount3, for `ibs repo mount`'s test), dpkg-dev and cargo-deb (the Debian package's test).
# Exits non-zero, loudly, if anything cannot be installed: a missing dependency is a failure, never
# a skip.
set -euo pipefail

need=()
command -v openssl >/dev/null || need+=(openssl)
command -v smbd >/dev/null || need+=(samba)
command -v smbclient >/dev/null || need+=(smbclient)
command -v mount >/dev/null || need+=(mount)
command -v setfacl >/dev/null || need+=(acl)
command -v setcap >/dev/null || need+=(libcap2-bin)
# The web console's browser tests drive Debian's headless Chromium through chromedriver.
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v ceph-mon >/dev/null || need+=(ceph-mon)
command -v ceph-osd >/dev/null || need+=(ceph-osd)
command -v radosgw >/dev/null || need+=(radosgw)
command -v ceph >/dev/null || need+=(ceph-common)
command -v curl >/dev/null || need+=(curl)
# The service unit's test runs `systemd-analyze verify` (no systemd needs to run).
command -v systemd-analyze >/dev/null || need+=(systemd)
# `ibs repo mount` (FUSE): fusermount3 mounts for non-root users; the test needs it and /dev/fuse.
command -v fusermount3 >/dev/null || need+=(fuse3)
# cargo-deb reads the package's library dependencies with dpkg-shlibdeps.
command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)

if [ ${#need[@]} -gt 0 ]; then
  echo "ensure-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
  fi
fi
if ! python3 -c 'import selenium' 2>/dev/null; then
  echo "ensure-deps: installing selenium (pip), for the web console's browser tests"
  python3 -m pip install --quiet 'selenium>=4.20,<5'
fi
python3 -c 'import selenium' || { echo "ensure-deps: selenium is still missing" >&2; exit 1; }
if ! command -v openapi-spec-validator >/dev/null; then
  echo "ensure-deps: installing openapi-spec-validator (pip)"
  python3 -m pip install --quiet 'openapi-spec-validator>=0.7,<1'
fi
# The Debian package is built with cargo-deb (packaging/build-deb.sh); it compiles in a few minutes,
# once per machine.
if ! command -v cargo-deb >/dev/null; then
  echo "ensure-deps: installing cargo-deb (cargo install), for the Debian package's test"
  cargo install cargo-deb --locked --version 3.8.0 --quiet
fi
# The suite runs under cargo-nextest (one process per test, test binaries in parallel).
if ! command -v cargo-nextest >/dev/null; then
  echo "ensure-deps: installing cargo-nextest (cargo install), the test runner"
  cargo install cargo-nextest --locked --quiet
fi
for tool in openssl smbd smbclient setfacl getfacl setcap getcap ceph-mon ceph-osd radosgw radosgw-admin \
    ceph curl chromium chromedriver systemd-analyze openapi-spec-validator fusermount3 dpkg-shlibdeps \
    cargo-deb cargo-nextest setpriv; do
  command -v "$tool" >/dev/null || { echo "ensure-deps: $tool is still missing" >&2; exit 1; }
done
cargo fmt --version >/dev/null
cargo clippy --version >/dev/null
