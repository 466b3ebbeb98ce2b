#!/usr/bin/env bash
# Entry point of the ibs benchmark: ibs vs restic on a generated, infrastructure-like dataset.
#
#   bench/run.sh                      # 1 GiB dataset, both tools
#   bench/run.sh --size 128M          # quicker
#   bench/run.sh --tools ibs --keep   # only ibs, keep repositories and restored trees
#
# bench/bench.py does the work: cargo build --release -p ibs, apt-get install restic if it is
# missing, dataset generation (bench/gen_dataset.py, reused when seed and size match), the four
# measured steps per tool, restore verification, the tables and bench/results/latest.json.
# See bench/README.md for every option.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ -d "$HOME/.cargo/bin" && ":$PATH:" != *":$HOME/.cargo/bin:"* ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

if ! command -v python3 >/dev/null 2>&1; then
    echo "run.sh: python3 (>= 3.11) is required" >&2
    exit 1
fi
if ! python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    echo "run.sh: python3 >= 3.11 is required (found $(python3 --version 2>&1))" >&2
    exit 1
fi

exec python3 "$here/bench.py" "$@"
