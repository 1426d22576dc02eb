#!/usr/bin/env bash
# A throwaway OpenSSH server on 127.0.0.1 for benchmarks and manual trials of the SFTP
# destination: the recipe of tests/common/sshd.rs (fresh ed25519 host and user keys,
# authorized_keys, an sshd_config with internal-sftp and public keys only, a client
# ssh_config with the alias `dstest`), as root or as any user with an /etc/passwd entry.
#
#   scripts/sshd-throwaway.sh start DIR [--deny hardlink,posix-rename]
#       Starts the server with its files in DIR (created; keys kept across restarts) and
#       prints, for `eval "$(scripts/sshd-throwaway.sh start DIR)"`:
#         export DATASAFE_SSH_COMMAND='ssh -F DIR/ssh_config'
#       and, as comments, the port, the alias and the two DST forms. --deny lists SFTP
#       requests the server refuses (names from `/usr/lib/openssh/sftp-server -Q requests`).
#   scripts/sshd-throwaway.sh stop DIR
#       Ends the server and every connection it holds (SIGTERM, then SIGKILL after 10 s);
#       DIR stays (keys, configs, sshd.log): remove it yourself.
#
# The same client config works for `rsync -a -e "ssh -F DIR/ssh_config" SRC dstest:/path`
# and `sftp -F DIR/ssh_config dstest`.
set -euo pipefail

SSHD=/usr/sbin/sshd
ALIAS=dstest
HOST_KEY_ALIAS=datasafe-test-sshd

die() { echo "sshd-throwaway: $*" >&2; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

# Every process below $1 (children first found, then theirs), one pid a line.
descendants() {
    local kid
    for kid in $(pgrep -P "$1" || true); do
        echo "$kid"
        descendants "$kid"
    done
}

running_pid() {
    local pid
    [ -f "$1/sshd.pid" ] || return 1
    pid=$(cat "$1/sshd.pid")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

# A port below the kernel's ephemeral range (no outgoing connection is handed it while
# the server is down) that nothing listens on now.
pick_port() {
    local low port i
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    [ "$low" -gt 11000 ] || low=60000
    for i in $(seq 1 200); do
        port=$((10000 + (RANDOM * 32768 + RANDOM) % (low - 10000)))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free port found below $low"
}

write_configs() {
    local dir=$1 port=$2 user=$3 deny=$4 sftp=internal-sftp
    [ -z "$deny" ] || sftp="internal-sftp -P $deny"
    cat >"$dir/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
AddressFamily inet
HostKey $dir/host_key
AuthorizedKeysFile $dir/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
UseDNS no
StrictModes no
PidFile $dir/sshd.pid
LogLevel VERBOSE
MaxStartups 100:30:200
Subsystem sftp $sftp
EOF
    cat >"$dir/ssh_config" <<EOF
Host $ALIAS
    HostName 127.0.0.1
    Port $port
Host $ALIAS 127.0.0.1 localhost
    User $user
    IdentityFile $dir/user_key
    IdentitiesOnly yes
    IdentityAgent none
    HostKeyAlias $HOST_KEY_ALIAS
    UserKnownHostsFile $dir/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
    CheckHostIP no
    BatchMode yes
    ConnectTimeout 10
    ServerAliveInterval 5
    ServerAliveCountMax 3
EOF
}

start() {
    local dir=$1 deny=$2 user port pid attempt log_at deadline
    [ -x "$SSHD" ] || die "$SSHD is missing: install openssh-server (apt-get install openssh-server)"
    if [ "$(id -u)" = 0 ]; then mkdir -p /run/sshd; fi
    user=$(id -un) || die "uid $(id -u) has no name, so sshd cannot log it in"
    # Without PAM, sshd as root refuses an account whose password is locked ('!').
    if [ "$(id -u)" = 0 ] && grep -q "^$user:!" /etc/shadow 2>/dev/null; then
        die "sshd would refuse $user: its password is locked ('!' in /etc/shadow); usermod -p '*' $user unlocks it without a password"
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    case $dir in *[[:space:]]* | *\'* | *\"*) die "$dir holds a space or quote: choose another folder" ;; esac
    if pid=$(running_pid "$dir"); then die "a server already runs from $dir (pid $pid): stop it first"; fi
    for key in host_key user_key; do
        [ -f "$dir/$key" ] || ssh-keygen -t ed25519 -N '' -q -C datasafe-test -f "$dir/$key"
    done
    cp "$dir/user_key.pub" "$dir/authorized_keys"
    echo "$HOST_KEY_ALIAS $(cat "$dir/host_key.pub")" >"$dir/known_hosts"
    rm -f "$dir/sshd.pid"
    for attempt in $(seq 1 20); do
        port=$(pick_port)
        write_configs "$dir" "$port" "$user" "$deny"
        log_at=$(stat -c %s "$dir/sshd.log" 2>/dev/null || echo 0)
        # sshd forks into the background before it binds: its exit code says nothing
        # about the port. The pid file (written once it listens) or the log does.
        "$SSHD" -f "$dir/sshd_config" -E "$dir/sshd.log" || die "sshd did not start: $(tail -n 5 "$dir/sshd.log" 2>/dev/null)"
        deadline=$((SECONDS + 20))
        until [ -s "$dir/sshd.pid" ]; do
            if tail -c +"$((log_at + 1))" "$dir/sshd.log" 2>/dev/null | grep -q "Cannot bind any address"; then
                continue 2
            fi
            [ "$SECONDS" -lt "$deadline" ] || die "sshd did not listen within 20 s; $dir/sshd.log says: $(tail -n 5 "$dir/sshd.log")"
            sleep 0.02
        done
        deadline=$((SECONDS + 20))
        until sftp -F "$dir/ssh_config" -b /dev/null "$ALIAS" 2>"$dir/login.stderr"; do
            [ "$SECONDS" -lt "$deadline" ] || die "no sftp login within 20 s: $(cat "$dir/login.stderr"); $dir/sshd.log says: $(tail -n 5 "$dir/sshd.log")"
            sleep 0.05
        done
        echo "export DATASAFE_SSH_COMMAND='ssh -F $dir/ssh_config'"
        echo "# sshd pid $(cat "$dir/sshd.pid") on 127.0.0.1 port $port, login $user; alias $ALIAS"
        echo "# DST: $ALIAS:/abs/path  or  sftp://$user@127.0.0.1:$port/abs/path"
        echo "# stop: $0 stop $dir"
        return
    done
    die "no free port in 20 tries; $dir/sshd.log says: $(tail -n 5 "$dir/sshd.log")"
}

stop() {
    local dir=$1 pid pids deadline
    pid=$(running_pid "$dir") || { echo "sshd-throwaway: no server runs from $dir" >&2; return 0; }
    # The listener and every connection's sshd below it; stopped first so none forks
    # or moves to init while the list is made.
    kill -STOP "$pid"
    pids="$pid $(descendants "$pid" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    # shellcheck disable=SC2086
    kill -CONT $pids 2>/dev/null || true
    deadline=$((SECONDS + 10))
    for p in $pids; do
        while kill -0 "$p" 2>/dev/null && [ "$(ps -o stat= -p "$p" | cut -c1)" != Z ]; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                kill -KILL "$p" 2>/dev/null || true
                break
            fi
            sleep 0.02
        done
    done
    rm -f "$dir/sshd.pid"
    echo "sshd-throwaway: stopped sshd $pid ($dir)" >&2
}

[ $# -ge 2 ] || usage
cmd=$1 dir=$2 deny=
shift 2
while [ $# -gt 0 ]; do
    case $1 in
        --deny) [ $# -ge 2 ] || usage; deny=$2; shift 2 ;;
        *) usage ;;
    esac
done
case $cmd in
    start) start "$dir" "$deny" ;;
    stop) stop "$dir" ;;
    *) usage ;;
esac
