#!/usr/bin/env bash
# A private Samba server on loopback for the ibs-smb tests and bench (run as root).
#
#   scripts/samba-test-server.sh start  [DIR] [PORT]   # default /tmp/ibs-samba 4455; idempotent
#   scripts/samba-test-server.sh stop   [DIR]
#   scripts/samba-test-server.sh status [DIR]
#
# Shares (user ibsuser, password from IBS_TEST_SMB_PASSWORD, default S3cret!pw):
#   backup    read-write, on DIR/share
#   small     read-write, on a 20 MiB tmpfs mounted at DIR/small (the disk-full test)
#   enc       DIR/share with encryption required
#   slow      DIR/share with strict sync + sync always (smbd answers writes with STATUS_PENDING interims:
#             `aio max threads = 1`, global, queues each connection's writes behind one another's
#             fsync, so they outlast smbd's 0.5 ms interim delay even on a fast disk)
#   signed    DIR/share; the server also sets `server signing = mandatory` when IBS_TEST_SMB_SIGNING=mandatory
#   readonly  DIR/ro, readable but not writable (access denied on writes)
# IBS_TEST_SMB_MAX_PROTOCOL (default SMB3_11) caps the server's dialect, e.g. SMB2_10 for a legacy server.
# A missing Samba that cannot be installed is a loud failure (non-zero exit), never a skip.
set -euo pipefail

CMD="${1:-}"
DIR="${2:-/tmp/ibs-samba}"
PORT="${3:-4455}"
USER_NAME=ibsuser
PASSWORD="${IBS_TEST_SMB_PASSWORD:-S3cret!pw}"
CONF="$DIR/smb.conf"
PIDFILE="$DIR/smbd.pid"

die() { echo "samba-test-server: $*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

running_pid() {
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid=$(cat "$PIDFILE")
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

ensure_samba() {
    if command -v smbd >/dev/null 2>&1 || [[ -x /usr/sbin/smbd ]]; then return 0; fi
    echo "samba-test-server: installing samba and smbclient" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y samba smbclient >/dev/null 2>&1; then
        apt-get update >/dev/null 2>&1 || true
        apt-get install -y samba smbclient >/dev/null || die "cannot install samba/smbclient"
    fi
    command -v smbd >/dev/null 2>&1 || [[ -x /usr/sbin/smbd ]] || die "smbd still missing after install"
}

write_conf() {
    local signing=auto
    [[ "${IBS_TEST_SMB_SIGNING:-}" == mandatory ]] && signing=mandatory
    cat >"$CONF" <<EOF
[global]
  workgroup = WORKGROUP
  netbios name = IBSTEST
  server role = standalone server
  interfaces = lo
  bind interfaces only = yes
  smb ports = $PORT
  disable netbios = yes
  server min protocol = SMB2_10
  server max protocol = ${IBS_TEST_SMB_MAX_PROTOCOL:-SMB3_11}
  passdb backend = tdbsam:$DIR/private/passdb.tdb
  private dir = $DIR/private
  state directory = $DIR/state
  cache directory = $DIR/cache
  lock directory = $DIR/lock
  pid directory = $DIR/pid
  ncalrpc dir = $DIR/ncalrpc
  log file = $DIR/log/log.%m
  log level = 1
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  map to guest = never
  server signing = $signing
  server smb encrypt = if_required
  aio max threads = 1

[backup]
  path = $DIR/share
  read only = no
  valid users = $USER_NAME
  create mask = 0644
  directory mask = 0755

[small]
  path = $DIR/small
  read only = no
  valid users = $USER_NAME

[enc]
  path = $DIR/share
  read only = no
  valid users = $USER_NAME
  smb encrypt = required

[slow]
  path = $DIR/share
  read only = no
  valid users = $USER_NAME
  strict sync = yes
  sync always = yes

[readonly]
  path = $DIR/ro
  read only = yes
  valid users = $USER_NAME
EOF
}

start() {
    ensure_samba
    if pid=$(running_pid) && port_open "$PORT"; then
        echo "samba-test-server: already running (pid $pid) on 127.0.0.1:$PORT"
        return 0
    fi
    [[ -n "${pid:-}" ]] && stop_pid "$pid"
    mkdir -p "$DIR"/{share,small,ro,private,state,cache,lock,pid,ncalrpc,log}
    chmod 755 "$DIR"
    write_conf
    if ! mountpoint -q "$DIR/small"; then
        mount -t tmpfs -o size=20m tmpfs "$DIR/small" || die "cannot mount the 20 MiB tmpfs on $DIR/small"
    fi
    id "$USER_NAME" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin "$USER_NAME" || id "$USER_NAME" >/dev/null 2>&1 \
        || die "cannot create user $USER_NAME"
    chown "$USER_NAME" "$DIR/share" "$DIR/small"
    chmod 755 "$DIR/ro"
    echo "readable" >"$DIR/ro/hello.txt"
    # The password goes through stdin only, never on a command line.
    printf '%s\n%s\n' "$PASSWORD" "$PASSWORD" | smbpasswd -c "$CONF" -s -a "$USER_NAME" >/dev/null \
        || die "smbpasswd failed"
    local smbd_bin
    smbd_bin=$(command -v smbd || echo /usr/sbin/smbd)
    setsid "$smbd_bin" --foreground --no-process-group -s "$CONF" </dev/null >"$DIR/log/smbd.out" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 100); do
        if port_open "$PORT"; then
            echo "samba-test-server: smbd (pid $(cat "$PIDFILE")) listening on 127.0.0.1:$PORT, dir $DIR"
            return 0
        fi
        if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then break; fi
        sleep 0.2
    done
    echo "samba-test-server: smbd did not come up on port $PORT; logs:" >&2
    cat "$DIR/log/smbd.out" "$DIR"/log/log.* 2>/dev/null | tail -50 >&2
    exit 1
}

kill_tree() {
    local p=$1 c
    for c in $(pgrep -P "$p" 2>/dev/null || true); do kill_tree "$c"; done
    kill -9 "$p" 2>/dev/null || true
}

stop_pid() {
    local pid=$1
    local children
    children=$(pgrep -P "$pid" 2>/dev/null || true)
    kill -9 "$pid" 2>/dev/null || true
    for c in $children; do kill_tree "$c"; done
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
}

stop() {
    if pid=$(running_pid); then
        stop_pid "$pid"
        echo "samba-test-server: stopped smbd (pid $pid)"
    else
        echo "samba-test-server: not running"
    fi
    rm -f "$PIDFILE"
    if mountpoint -q "$DIR/small" 2>/dev/null; then umount "$DIR/small" || umount -l "$DIR/small" || true; fi
}

status() {
    local port
    port=$(sed -n 's/^ *smb ports = //p' "$CONF" 2>/dev/null || true)
    if pid=$(running_pid) && [[ -n "$port" ]] && port_open "$port"; then
        echo "running (pid $pid) on 127.0.0.1:$port, dir $DIR"
    else
        echo "not running (dir $DIR)"
        return 3
    fi
}

case "$CMD" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status [DIR] [PORT]" >&2; exit 2 ;;
esac
