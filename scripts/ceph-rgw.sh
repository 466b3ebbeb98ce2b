#!/usr/bin/env bash
# A throw-away single-node Ceph cluster with a RADOS Gateway (S3) on loopback, for the S3 tests.
# No systemd, no containers: one monitor, one memstore OSD (objects in RAM), radosgw (beast, with
# tcp_nodelay=1 as the operator guide advises: without it every small reply waits ~40 ms).
#
#   scripts/ceph-rgw.sh start  [DIR]   # idempotent; prints the endpoint and keys, writes DIR/env
#   scripts/ceph-rgw.sh stop   [DIR]   # kills the recorded pids and removes DIR
#   scripts/ceph-rgw.sh status [DIR]   # exit 0 and print DIR/env when the gateway answers
#   scripts/ceph-rgw.sh stop-rgw  [DIR]   # stops only radosgw (fault tests)
#   scripts/ceph-rgw.sh start-rgw [DIR]   # starts it again on the same port
#
# DIR defaults to /tmp/ibs-rgw. Ports are chosen free at start, never fixed. DIR/env holds
# IBS_TEST_RGW_ENDPOINT, IBS_TEST_RGW_REGION and the access/secret keys of two S3 users:
# `writer` (IBS_TEST_RGW_WRITER_*) and `maintenance` (IBS_TEST_RGW_MAINT_*). The keys are made by
# radosgw-admin itself, so no secret is ever on a command line. Concurrent callers are serialized
# with flock on DIR.lock. A cluster that cannot start is a loud failure (non-zero exit).
set -euo pipefail

CMD="${1:-}"
DIR="${2:-/tmp/ibs-rgw}"
CONF="$DIR/ceph.conf"

die() { echo "ceph-rgw: $*" >&2; exit 1; }

[[ -n "$CMD" ]] || die "usage: $0 start|stop|status|stop-rgw|start-rgw [DIR]"
case "$DIR" in /*) ;; *) die "DIR must be absolute: $DIR" ;; esac

exec 9>"$DIR.lock"
flock 9

ceph_() { ceph -c "$CONF" -n client.admin --connect-timeout 20 "$@"; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

alive() { [[ -f "$DIR/$1.pid" ]] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

# Starts a daemon in the foreground of its own session, detached from our stdio and lock.
spawn() {
    local name=$1
    shift
    setsid "$@" </dev/null >>"$DIR/log/$name.out" 2>&1 9>&- &
    echo $! >"$DIR/$name.pid"
}

endpoint_answers() {
    [[ -f "$DIR/env" ]] || return 1
    # shellcheck disable=SC1091
    local ep
    ep=$(sed -n 's/^IBS_TEST_RGW_ENDPOINT=//p' "$DIR/env")
    curl -s -o /dev/null -m 5 "$ep"
}

wait_for() {
    local what=$1 secs=$2
    shift 2
    for _ in $(seq 1 $((secs * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "ceph-rgw: $what did not come up within ${secs}s; logs in $DIR/log:" >&2
    tail -n 20 "$DIR"/log/* >&2 || true
    return 1
}

ensure_packages() {
    local need=()
    command -v ceph-mon >/dev/null || need+=(ceph-mon)
    command -v ceph-osd >/dev/null || need+=(ceph-osd)
    command -v radosgw >/dev/null || need+=(radosgw)
    command -v ceph >/dev/null || need+=(ceph-common)
    command -v curl >/dev/null || need+=(curl)
    [[ ${#need[@]} -eq 0 ]] && return 0
    echo "ceph-rgw: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || die "cannot install ${need[*]}"
    fi
}

start_rgw() {
    alive rgw && return 0
    spawn rgw radosgw -c "$CONF" -n client.rgw.gw -f
    wait_for "radosgw" 60 curl -s -o /dev/null -m 2 "http://127.0.0.1:$(cat "$DIR/rgw.port")" \
        || die "radosgw did not answer"
}

stop_pid() {
    local name=$1 pid
    alive "$name" || { rm -f "$DIR/$name.pid"; return 0; }
    pid=$(cat "$DIR/$name.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$DIR/$name.pid"
}

stop_all() {
    for d in rgw osd mon; do stop_pid "$d"; done
    rm -rf "$DIR"
}

make_user() {
    local uid=$1 var=$2 json
    json=$(radosgw-admin -c "$CONF" -n client.admin user create --uid "$uid" \
        --display-name "ibs test $uid" --gen-access-key --gen-secret 2>>"$DIR/log/admin.out") \
        || die "radosgw-admin user create $uid failed"
    python3 -c '
import json, sys
k = json.load(sys.stdin)["keys"][0]
print("IBS_TEST_RGW_%s_ACCESS_KEY=%s" % (sys.argv[1], k["access_key"]))
print("IBS_TEST_RGW_%s_SECRET_KEY=%s" % (sys.argv[1], k["secret_key"]))
' "$var" <<<"$json" >>"$DIR/env" || die "cannot read the keys of $uid"
}

start_cluster() {
    ensure_packages
    rm -rf "$DIR"
    mkdir -p "$DIR"/{log,run,mon,osd,rgw}
    local fsid mon_port rgw_port osd_uuid osd_secret osd_id
    fsid=$(python3 -c 'import uuid; print(uuid.uuid4())')
    osd_uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
    mon_port=$(free_port)
    rgw_port=$(free_port)
    echo "$rgw_port" >"$DIR/rgw.port"
    cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$mon_port
public addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 1
osd pool default pgp num = 1
osd crush chooseleaf type = 0
osd objectstore = memstore
memstore device bytes = 4294967296
osd class load list = *
osd class default list = *
paxos propose interval = 0.1
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
run dir = $DIR/run
admin socket = $DIR/run/\$name.\$pid.asok
log file = $DIR/log/\$name.log
mon data = $DIR/mon/\$cluster-\$id
osd data = $DIR/osd/\$cluster-\$id
[client.admin]
keyring = $DIR/keyring.client.admin
[osd]
keyring = $DIR/keyring.osd.\$id
[client.rgw.gw]
keyring = $DIR/keyring.client.rgw.gw
rgw frontends = beast endpoint=127.0.0.1:$rgw_port tcp_nodelay=1
rgw data = $DIR/rgw
rgw enable usage log = false
EOF
    ceph-authtool --create-keyring "$DIR/keyring.mon" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool --create-keyring "$DIR/keyring.client.admin" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
    ceph-authtool "$DIR/keyring.mon" --import-keyring "$DIR/keyring.client.admin" >/dev/null
    monmaptool --create --addv a "[v1:127.0.0.1:$mon_port]" --fsid "$fsid" "$DIR/monmap" >/dev/null
    ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/keyring.mon" \
        >>"$DIR/log/mkfs.out" 2>&1 || die "ceph-mon --mkfs failed (see $DIR/log/mkfs.out)"
    spawn mon ceph-mon -c "$CONF" -i a -f
    wait_for "the monitor" 60 ceph_ mon stat || die "monitor did not form a quorum"

    osd_secret=$(ceph-authtool --gen-print-key)
    printf '{"cephx_secret": "%s"}' "$osd_secret" >"$DIR/osd-secret.json"
    osd_id=$(ceph_ osd new "$osd_uuid" -i "$DIR/osd-secret.json") || die "ceph osd new failed"
    rm -f "$DIR/osd-secret.json"
    ceph-authtool --create-keyring "$DIR/keyring.osd.$osd_id" -n "osd.$osd_id" \
        --add-key "$osd_secret" >/dev/null
    mkdir -p "$DIR/osd/ceph-$osd_id"
    ceph-osd -c "$CONF" -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" >>"$DIR/log/mkfs.out" 2>&1 \
        || die "ceph-osd --mkfs failed (see $DIR/log/mkfs.out)"
    ceph_ osd crush add "osd.$osd_id" 1.0 root=default >/dev/null 2>&1 || true
    spawn osd ceph-osd -c "$CONF" -i "$osd_id" -f
    wait_for "the OSD" 60 bash -c "ceph -c '$CONF' -n client.admin osd dump | grep -q '^osd.$osd_id up'" \
        || die "the OSD did not come up"

    ceph_ auth get-or-create client.rgw.gw mon 'allow rw' osd 'allow rwx' \
        -o "$DIR/keyring.client.rgw.gw" >/dev/null || die "cannot create the rgw key"
    start_rgw
    {
        echo "IBS_TEST_RGW_ENDPOINT=http://127.0.0.1:$rgw_port"
        echo "IBS_TEST_RGW_REGION=us-east-1"
    } >"$DIR/env.tmp"
    mv "$DIR/env.tmp" "$DIR/env"
    make_user writer WRITER
    make_user maintenance MAINT
    chmod 600 "$DIR/env"
    touch "$DIR/ready"
}

running() { [[ -f "$DIR/ready" ]] && alive mon && alive osd && alive rgw && endpoint_answers; }

case "$CMD" in
start)
    if ! running; then
        stop_all
        mkdir -p "$DIR"
        ( start_cluster ) || { stop_all; exit 1; }
    fi
    cat "$DIR/env"
    ;;
stop)
    stop_all
    ;;
status)
    running || { echo "ceph-rgw: not running in $DIR" >&2; exit 1; }
    cat "$DIR/env"
    ;;
stop-rgw)
    [[ -f "$DIR/ready" ]] || die "no cluster in $DIR"
    stop_pid rgw
    ;;
start-rgw)
    [[ -f "$DIR/ready" ]] || die "no cluster in $DIR"
    start_rgw
    ;;
*)
    die "unknown command $CMD"
    ;;
esac
