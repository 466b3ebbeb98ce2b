#!/bin/bash
# Peak RSS, wall and CPU (/usr/bin/time) of two ibs binaries' backups, alternating on ONE
# repository: a full backup of DATASET by binary A, then ROUNDS rounds of a no-change backup by
# each binary and, when DAY_CMD is set (it gets the day number appended, e.g.
# DAY_CMD='python3 bench/gen_scale.py DATASET --point 1m --day'), one day of changes applied
# before each binary's changed backup. Both binaries must read and write the same format. Page
# cache dropped before each step (needs root). One line per step: tag, step, the time figures,
# load average, repository bytes after the step.
# usage: [DAY_CMD=… FIRST_DAY=1] bench/rss_ab.sh BIN_A BIN_B DATASET ROUNDS [WORK]
set -u
A=$1; B=$2; DS=$3; ROUNDS=$4; W=${5:-bench/work/scale/rss-ab}
rm -rf "$W"; mkdir -p "$W/repo"
export IBS_PFX_PASSWORD=$(head -c 18 /dev/urandom | base64) IBS_STATE_DIR=$W/state
"$A" cert new --subject rss --cer "$W/c.cer" --pfx "$W/c.pfx" --bits 2048 >/dev/null
"$A" repo init --repo "$W/repo" --cert "$W/c.cer" --state "$W/state" >/dev/null
T="/usr/bin/time -f %e_wall_s_%U_user_%S_sys_%M_maxrss_kib"
step() { # tag bin step
  sync; echo 3 > /proc/sys/vm/drop_caches
  $T "$2" repo backup --repo "$W/repo" --state "$W/state" --source "data=$DS" > "$W/$1-$3.out" 2>"$W/$1-$3.err" \
    || { echo "$1 $3 failed: $(tail -3 "$W/$1-$3.err")"; exit 1; }
  echo "$1 $3 $(tail -1 "$W/$1-$3.err") load=$(cut -d' ' -f1 /proc/loadavg) repo=$(du -sb "$W/repo" | cut -f1)"
}
step A "$A" full
day=${FIRST_DAY:-1}
for r in $(seq 1 "$ROUNDS"); do
  for t in A B; do
    bin=$A; [ $t = B ] && bin=$B
    step $t "$bin" nochange$r
    if [ -n "${DAY_CMD:-}" ]; then
      $DAY_CMD $day > "$W/day$day.out" 2>&1 || { echo "DAY_CMD $day failed"; exit 1; }
      step $t "$bin" changed$r-day$day
      day=$((day + 1))
    fi
  done
done
