#!/usr/bin/env bash
# A throwaway single-host Ceph cluster serving S3 on 127.0.0.1, for tests
# that need conditional writes that are really atomic (moto's are not).
#
#   scripts/ceph.sh start DIR        one monitor, one OSD keeping its data in
#                                    memory (memstore) and one radosgw, all
#                                    under DIR; prints the S3 endpoint
#   scripts/ceph.sh bucket DIR NAME  creates an S3 bucket (fails if it exists)
#   scripts/ceph.sh stop DIR         kills the daemons and removes DIR
#
# The S3 user is access key `testing`, secret `testing`. No systemd and no
# manager daemon; everything runs as the calling user (root in CI). `start`
# on a DIR whose cluster still answers only prints its endpoint again.
#
# Environment:
#   CEPH_MON_PORT, CEPH_RGW_PORT  fixed ports (default: free ones)
#   CEPH_MEMSTORE_BYTES           OSD capacity in RAM (default 4 GiB)
#   CEPH_OWNER_PID                stop the cluster once this process is gone
#
# Only the endpoint goes to stdout; progress and errors go to stderr, and a
# failed start prints the end of each daemon's log.
set -euo pipefail

say() { echo "ceph: $*" >&2; }
die() { say "$*"; exit 1; }
script=$(readlink -f "$0")

# Ceph's tools with this cluster's configuration, never waiting forever.
ceph_cli() { timeout 60 ceph -c "$dir/ceph.conf" --connect-timeout 30 "$@"; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# True while process $1 is one of this cluster's daemons (started with its
# ceph.conf) and runs: a zombie waiting to be reaped does not count, and a
# stale pid file naming a reused pid is not ours to signal.
ours() {
    local stat
    stat=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $stat != Z* ]] &&
        tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "-c $dir/ceph.conf"
}

# True when every daemon whose pid file is under DIR/run is alive.
all_alive() {
    local n=0 f
    for f in "$dir"/run/*.pid; do
        [ -e "$f" ] || continue
        ours "$(cat "$f")" || return 1
        n=$((n + 1))
    done
    [ "$n" -eq 3 ]
}

# True when radosgw answers at endpoint $1 (not just anything on the port).
answers() { curl -s --max-time 2 "$1/" 2>/dev/null | grep -q ListAllMyBucketsResult; }

# After a failed start: print the end of every log, stop what runs, give up.
fail() {
    local f
    for f in "$dir"/log/*; do
        [ -s "$f" ] || continue
        echo "---- $f (last 15 lines)" >&2
        tail -n 15 "$f" >&2
    done
    stop_daemons
    die "$*"
}

write_conf() {
    cat >"$dir/ceph.conf" <<EOF
# Written by cairn's scripts/ceph.sh: a one-OSD test cluster.
[global]
fsid = $1
mon_host = v2:127.0.0.1:$mon_port
public_addr = 127.0.0.1
ms_bind_ipv6 = false
keyring = $dir/keyring
run_dir = $dir/run
pid_file = $dir/run/\$name.pid
admin_socket = $dir/run/\$name.asok
log_file = $dir/log/\$name.log
auth_allow_insecure_global_id_reclaim = false
# One copy of everything, few placement groups, no warnings about either.
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_max_pg_per_osd = 1000
mon_data_avail_warn = 1
mon_data_avail_crit = 0

[mon]
mon_data = $dir/mon/\$cluster-\$id

[osd]
osd_data = $dir/osd/\$cluster-\$id
osd_objectstore = memstore
memstore_device_bytes = ${CEPH_MEMSTORE_BYTES:-4294967296}

[client.rgw.s3]
rgw_frontends = beast endpoint=127.0.0.1:$rgw_port
rgw_data = $dir/rgw
EOF
}

# Keys for the monitor, the admin tools, the OSD and the gateway.
write_keyring() {
    local k=$dir/keyring
    ceph-authtool --create-keyring "$k" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool "$k" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
    ceph-authtool "$k" --gen-key -n osd.0 --cap mon 'allow profile osd' --cap osd 'allow *' --cap mgr 'allow profile osd' >/dev/null
    ceph-authtool "$k" --gen-key -n client.rgw.s3 --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw' >/dev/null
}

# Runs a daemon that forks into the background; its own output goes to a
# log so that no caller's pipe is held open by it.
daemon() {
    local name=$1
    shift
    "$@" -c "$dir/ceph.conf" </dev/null >>"$dir/log/$name.out" 2>&1 || fail "$name did not start"
}

# Waits up to $1 seconds for "$3 ..." to succeed; gives up early when the
# daemon whose pid file is run/$2.pid has exited.
wait_for() {
    local secs=$1 pidfile=$dir/run/$2.pid i
    shift 2
    for ((i = 0; i < secs * 4; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        if [ -s "$pidfile" ] && ! ours "$(cat "$pidfile")"; then
            return 1
        fi
        sleep 0.25
    done
    return 1
}

osd_up() { ceph_cli osd stat 2>/dev/null | grep -q ' 1 up'; }

start() {
    if [ -f "$dir/endpoint" ] && all_alive && answers "$(cat "$dir/endpoint")"; then
        cat "$dir/endpoint"
        return
    fi
    for tool in ceph-mon ceph-osd radosgw radosgw-admin ceph-authtool monmaptool uuidgen curl python3; do
        command -v "$tool" >/dev/null || die "$tool not found: run scripts/deps.sh (Debian: radosgw ceph-mon ceph-osd uuid-runtime)"
    done
    if [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
        [ -f "$dir/ceph.conf" ] || die "$dir is not empty and holds no cluster of ours: not touching it"
        say "restarting the stopped cluster at $dir"
        stop_daemons
        rm -rf "$dir"
    fi
    mkdir -p "$dir"/{mon,osd,run,log,rgw}
    mon_port=${CEPH_MON_PORT:-$(free_port)}
    rgw_port=${CEPH_RGW_PORT:-$(free_port)}
    local t0=$SECONDS fsid osd_uuid id endpoint=http://127.0.0.1:$rgw_port
    fsid=$(uuidgen)
    write_conf "$fsid"
    write_keyring

    monmaptool --create --addv a "[v2:127.0.0.1:$mon_port]" --fsid "$fsid" "$dir/monmap" >/dev/null
    ceph-mon -c "$dir/ceph.conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/keyring" \
        >>"$dir/log/mkfs.out" 2>&1 || fail "monitor mkfs failed"
    daemon mon ceph-mon -i a
    wait_for 60 mon.a ceph_cli mon stat || fail "the monitor did not answer within 60 s"
    say "monitor up on port $mon_port after $((SECONDS - t0)) s"

    osd_uuid=$(uuidgen)
    id=$(ceph_cli osd new "$osd_uuid") || fail "could not register the OSD"
    mkdir -p "$dir/osd/ceph-$id"
    ceph-osd -c "$dir/ceph.conf" -i "$id" --mkfs --osd-uuid "$osd_uuid" \
        >>"$dir/log/mkfs.out" 2>&1 || fail "OSD mkfs failed"
    daemon osd ceph-osd -i "$id"
    wait_for 60 "osd.$id" osd_up || fail "the OSD did not come up within 60 s"
    say "OSD up after $((SECONDS - t0)) s"

    daemon rgw radosgw -n client.rgw.s3
    wait_for 60 client.rgw.s3 answers "$endpoint" || fail "radosgw did not answer on $endpoint within 60 s"
    radosgw-admin -c "$dir/ceph.conf" user create --uid=testing --display-name=testing \
        --access-key=testing --secret-key=testing >>"$dir/log/admin.out" 2>&1 || fail "could not create the S3 user"
    echo "$endpoint" >"$dir/endpoint"
    say "radosgw serves $endpoint after $((SECONDS - t0)) s"

    if [ -n "${CEPH_OWNER_PID:-}" ]; then
        # A watcher in its own session, holding none of the caller's pipes.
        setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec "$2" stop "$3"' \
            watch "$CEPH_OWNER_PID" "$script" "$dir" </dev/null >/dev/null 2>&1 &
    fi
    echo "$endpoint"
}

# Kills every daemon of DIR that still runs and waits until they are gone.
# The data lives in memory and goes with them, so nothing is gained by a
# clean shutdown (radosgw alone takes 5 s for one).
stop_daemons() {
    local f p i pids=() left
    for f in "$dir"/run/*.pid; do
        [ -e "$f" ] && p=$(cat "$f") && ours "$p" && pids+=("$p")
    done
    [ ${#pids[@]} -gt 0 ] || return 0
    kill -9 "${pids[@]}" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
        left=()
        for p in "${pids[@]}"; do
            ours "$p" && left+=("$p")
        done
        [ ${#left[@]} -gt 0 ] || return 0
        sleep 0.25
    done
    die "daemons ${left[*]} of $dir still run 10 s after SIGKILL"
}

stop() {
    [ -e "$dir" ] || return 0
    [ -f "$dir/ceph.conf" ] || die "$dir holds no cluster of ours: not removing it"
    stop_daemons
    rm -rf "$dir"
}

# A request signed as the S3 user (radosgw refuses anonymous ones); prints
# the HTTP status, the body goes to the file $1.
s3() {
    local out=$1
    shift
    curl -s -o "$out" -w '%{http_code}' --max-time 30 --aws-sigv4 'aws:amz:us-east-1:s3' -u testing:testing \
        -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@" || echo " (curl failed)"
}

# Creates bucket NAME. radosgw answers 200 to its owner creating a bucket
# again, so an existing one is looked for first: tests sharing a cluster
# must not share a bucket by accident.
bucket() {
    local name=${1:?usage: ceph.sh bucket DIR NAME} out code url
    [ -f "$dir/endpoint" ] || die "no cluster at $dir"
    url=$(cat "$dir/endpoint")/$name
    code=$(s3 /dev/null -I "$url")
    [ "$code" = 404 ] || die "bucket $name: exists already or cannot be looked up (HTTP $code)"
    out=$(mktemp)
    code=$(s3 "$out" -X PUT "$url")
    if [ "$code" != 200 ]; then
        cat "$out" >&2
        echo >&2
        rm -f "$out"
        die "creating bucket $name: HTTP $code"
    fi
    rm -f "$out"
}

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: ceph.sh start|stop DIR, or ceph.sh bucket DIR NAME"
dir=$(readlink -m "$dir") # absolute: daemons are recognised by their config path
case $cmd in
start) start ;;
stop) stop ;;
bucket) bucket "${3:-}" ;;
*) die "unknown command $cmd (start, stop or bucket)" ;;
esac
