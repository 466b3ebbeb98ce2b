#!/usr/bin/env bash
# ibs on Ceph RGW (loopback) against ibs on a local folder, restic on the same RGW, and four
# concurrent ibs writers against one (issue 14, "Performance"). See bench/README.md, "S3".
#
#   bench/s3.sh                                   # 1 GiB tree, 4 writers of 256 MiB trees
#   bench/s3.sh --size 256M --writer-size 64M     # quicker
#   bench/s3.sh --parts writers --repeat 3        # only the writers part, medians of 3 rounds
#
# Starts (or reuses) the shared gateway of scripts/ceph-rgw.sh in $IBS_TEST_RGW_DIR (default
# /tmp/ibs-rgw), creates its own buckets and deletes them at the end. Needs target/release/ibs
# (cargo build --release -p ibs) or --ibs-bin PATH. Prints the tables; JSON in bench/results/s3.json.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || { echo "s3.sh: python3 >= 3.11 is required" >&2; exit 1; }
exec python3 "$here/s3.py" "$@"
