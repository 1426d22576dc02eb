#!/usr/bin/env bash
# Benchmarks of an SFTP destination (issue 13) against the tools people use to mirror to
# another machine, side by side in one run, over one throwaway OpenSSH server on
# 127.0.0.1 that this script starts (and stops) itself:
#
#   1. first mirror of the 10k tree        datasafe sync SRC sftp://…  vs rsync -a -e ssh
#      (the remote folder on tmpfs, then on the ordinary disk: datasafe makes every file
#      durable with fsync@openssh.com before its rename, so it is also timed against
#      rsync --fsync, the like-for-like durability)
#   2. no-op resync of the 100k tree       datasafe sync               vs rsync -a --delete -e ssh
#   3. live create/modify/delete latency   datasafe watch --debounce 50ms vs lsyncd
#      (20k files watched)                 default.rsyncssh with delay = 0
#   4. RSS watching the 100k tree to an sftp DST (datasafe; lsyncd for scale)
#
# Targets (issue 13): 1. <= 1.0x; 2. <= 0.2x (and no remote listing); 3. p50 <= 100 ms,
# p90 <= 200 ms, 0 missed; 4. < 64 MiB. Ratio = datasafe / other; lower is better.
#
# The remote path is on this machine, so the mirrors are compared with the source
# directly. Trees come from scripts/mktree.py (seed 1 and 2, as in bench.sh and
# bench_watch.sh); latency from scripts/latency.py (the remote folder is a local folder).
#
# Timing: every command runs once as a warm-up (the source into the page cache), then
# RUNS rounds with the tools taking turns in a rotating order, so a slow spell of this
# shared machine lands on all of them alike; medians are reported. Before each run of a
# first mirror the previous mirrors are moved aside (on the disk; deleted on tmpfs: see
# bench.sh on ext4 and freed inodes), datasafe's local index cache is removed (a first
# mirror has none) and `sync` flushes the disk. Unlike bench.sh, a run is not thrown
# away when other processes use the CPU: the server side (sshd, sftp-server, the remote
# rsync) is such a process here. Instead the script waits (at most --idle-wait s) for the
# machine to be idle before each run, prints the load average of every case, and reports the
# server side's CPU (what the sshd listener reaped) beside the client's.
#
# usage: scripts/bench_sftp.sh [--quick] [--runs N] [--n N] [--idle S] [--keep] [--no-watch]
#                              [--base BIN]
#   --quick     small trees (1k first mirror, 5k no-op, 2k/10k watched), 3 runs: smoke test
#   --runs N    timed runs per command in 1. and 2. (default 5; quick 3)
#   --n N       latency rounds per tool in 3. (default 50; quick 10)
#   --idle S    idle window in 3. and 4. (default 20 s)
#   --keep      keep the temp dirs (printed at the end)
#   --no-watch  skip 3. and 4. (which need lsyncd)
#   --base BIN  also time another datasafe binary in 1. and 2., beside this checkout's,
#               for a before/after ratio of the same runs
#   --idle-wait S  how long each timed run waits for the machine to go idle (default 10)
# Environment: BENCH_TMPDIR  where the temp dir goes (default: $TMPDIR or /tmp; this is
#              "the disk"); BENCH_TMPFS  a tmpfs folder for the tmpfs runs of 1. and the
#              remote of 2. (default /dev/shm); CARGO_TARGET_DIR is honoured.
# Needs: cargo, python3, rsync, ssh, ssh-keygen, /usr/sbin/sshd (Debian openssh-server);
# for 3. and 4.: lsyncd (2.2.x).
set -euo pipefail

QUICK=0; RUNS=""; N=""; IDLE=20; KEEP=0; NO_WATCH=0; BASE=""; IDLE_WAIT=10
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --runs) RUNS="$2"; shift ;;
        --n) N="$2"; shift ;;
        --idle) IDLE="$2"; shift ;;
        --keep) KEEP=1 ;;
        --no-watch) NO_WATCH=1 ;;
        --base) BASE="$2"; shift ;;
        --idle-wait) IDLE_WAIT="$2"; shift ;;
        -h|--help) sed -n '2,48p' "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    A_FILES=1000; B_FILES=5000; W_FILES=2000; M_FILES=10000
    RUNS=${RUNS:-3}; N=${N:-10}
else
    A_FILES=10000; B_FILES=100000; W_FILES=20000; M_FILES=100000
    RUNS=${RUNS:-5}; N=${N:-50}
fi
PROBE_TIMEOUT=2      # per probe: a change not mirrored within 2 s counts as missed

SSHD=/usr/sbin/sshd
for tool in cargo python3 rsync ssh ssh-keygen "$SSHD"; do
    command -v "$tool" >/dev/null || { echo "bench_sftp.sh: $tool is not installed" >&2; exit 1; }
done
if [ "$NO_WATCH" = 0 ] && ! command -v lsyncd >/dev/null; then
    echo "bench_sftp.sh: lsyncd is not installed (apt-get install lsyncd, or --no-watch)" >&2
    exit 1
fi
SHM=${BENCH_TMPFS:-/dev/shm}
if [ "$(stat -f -c %T "$SHM" 2>/dev/null)" != tmpfs ]; then
    echo "bench_sftp.sh: $SHM is not a tmpfs (set BENCH_TMPFS)" >&2
    exit 1
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MKTREE="$ROOT/scripts/mktree.py"
LATENCY="$ROOT/scripts/latency.py"
echo "== building (cargo build --release)"
(cd "$ROOT" && cargo build --release --quiet)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/datasafe"
[ -x "$BIN" ] || { echo "no binary at $BIN" >&2; exit 1; }

WORK=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/datasafe-sftp-bench.XXXXXX")
FAST=$(mktemp -d "$SHM/datasafe-sftp-bench.XXXXXX")
RES="$WORK/results"
PIDFILE="$WORK/cmd.pid"
mkdir -p "$RES" "$WORK/state" "$WORK/config" "$WORK/trash" "$WORK/remote"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "${HARNESS_PID:-}" ] && kill -0 "$HARNESS_PID" 2>/dev/null; then
        kill -TERM "$HARNESS_PID" 2>/dev/null || true
        wait "$HARNESS_PID" 2>/dev/null || true
    fi
    if [ -s "$PIDFILE" ]; then
        local pg
        pg=$(cat "$PIDFILE")
        if kill -0 -- "-$pg" 2>/dev/null; then
            kill -CONT -- "-$pg" 2>/dev/null || true
            kill -TERM -- "-$pg" 2>/dev/null || true
            sleep 1
            kill -KILL -- "-$pg" 2>/dev/null || true
        fi
    fi
    # Only the sshd this script started (its own pid file).
    if [ -n "${THROWAWAY:-}" ]; then
        "$THROWAWAY" stop "$SSHDIR" 2>/dev/null || true
    elif [ -s "$WORK/sshd.pid" ]; then
        kill "$(cat "$WORK/sshd.pid")" 2>/dev/null || true
    fi
    if [ "$KEEP" = 1 ]; then
        echo "kept $WORK and $FAST"
    else
        rm -rf "$WORK" "$FAST"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A throwaway OpenSSH server on 127.0.0.1: host key, user key, authorized_keys,
# internal-sftp; the client reaches it as host $HOST through its own ssh_config, used by
# every tool alike (ssh -F). scripts/sshd-throwaway.sh (the test harness's recipe) where
# it exists, else the same few lines here.
THROWAWAY=""
if [ -x "$ROOT/scripts/sshd-throwaway.sh" ]; then
    THROWAWAY="$ROOT/scripts/sshd-throwaway.sh"
    SSHDIR="$WORK/sshd"
    eval "$("$THROWAWAY" start "$SSHDIR")"
    HOST=dstest
    PORT=$(awk '$1 == "Port" {print $2; exit}' "$SSHDIR/ssh_config")
else
SSHDIR="$WORK"
HOST=bench
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ssh-keygen -q -t ed25519 -N '' -f "$WORK/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/user_key"
cp "$WORK/user_key.pub" "$WORK/authorized_keys"
cat > "$WORK/sshd_config" <<EOF
Port $PORT
ListenAddress 127.0.0.1
HostKey $WORK/host_key
AuthorizedKeysFile $WORK/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PidFile $WORK/sshd.pid
Subsystem sftp internal-sftp
EOF
cat > "$WORK/ssh_config" <<EOF
Host bench
    HostName 127.0.0.1
    Port $PORT
    User $(id -un)
    IdentityFile $WORK/user_key
    IdentitiesOnly yes
    UserKnownHostsFile /dev/null
    StrictHostKeyChecking no
    LogLevel ERROR
EOF
mkdir -p /run/sshd 2>/dev/null || true
"$SSHD" -f "$WORK/sshd_config" -E "$WORK/sshd.log"
for _ in $(seq 50); do [ -s "$WORK/sshd.pid" ] && break; sleep 0.1; done
fi
SSH="ssh -F $SSHDIR/ssh_config"
$SSH "$HOST" true || { echo "bench_sftp.sh: cannot log in to the throwaway sshd (see $SSHDIR/sshd.log)" >&2; exit 1; }
export DATASAFE_SSH_COMMAND="$SSH" XDG_STATE_HOME="$WORK/state" XDG_CONFIG_HOME="$WORK/config"

echo "== machine"
echo "cpu:      $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo)"
echo "kernel:   $(uname -r)"
echo "datasafe: $BIN ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo 'not a git checkout'))"
echo "disk:     $(df -T "$WORK" | awk 'NR==2 {print $2 " on " $1}') ($WORK)"
echo "tmpfs:    $FAST"
echo "tools:    $(ssh -V 2>&1 | cut -d, -f1) (client and sshd), rsync $(rsync --version | head -1 | awk '{print $3}')$(command -v lsyncd >/dev/null && echo ", lsyncd $(lsyncd --version 2>&1 | awk '{print $2}')" || true)"
echo "sshd:     127.0.0.1:$PORT, Subsystem sftp internal-sftp (${THROWAWAY:-inline recipe})"

echo "== trees (scripts/mktree.py)"
python3 "$MKTREE" "$WORK/t10k" --files "$A_FILES" --size-kib 8 --seed 1
python3 "$MKTREE" "$WORK/t100k" --files "$B_FILES" --size-kib 1 --seed 1
sync

# The timer: TIMER OUT RUNS PREPARE CMD...: one warm-up run of every command, then RUNS
# rounds in rotating order, PREPARE (untimed) before each run. Wall time, the client's
# CPU (this process's reaped children: datasafe or rsync and their ssh) and the
# server's CPU (what the throwaway sshd's listener reaped: the session, internal-sftp or
# the remote rsync) per run; medians to OUT.json.
cat > "$WORK/timer.py" <<'END'
import json, os, resource, statistics, subprocess, sys, time

HZ = os.sysconf("SC_CLK_TCK")
SSHD = int(open(os.environ["SSHD_PIDFILE"]).read())

def reaped(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[13]) + int(f[14])) / HZ

def children(pid):
    try:
        return open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        return []

def busy():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) / HZ

def wait_idle(limit=float(os.environ["IDLE_WAIT"])):
    start = time.monotonic()
    while time.monotonic() - start < limit:
        b0, t0 = busy(), time.monotonic()
        time.sleep(0.3)
        if (busy() - b0) / (time.monotonic() - t0) < 0.2:
            return True
    return False

def run(cmd):
    subprocess.run(prepare, shell=True, check=True)
    idle = wait_idle()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    s0 = reaped(SSHD)
    t0 = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The server's session ends just after the client's: wait for the listener to reap it.
    deadline = time.monotonic() + 5
    while children(SSHD) and time.monotonic() < deadline:
        time.sleep(0.02)
    client = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, client, reaped(SSHD) - s0, idle

out, runs, prepare, cmds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
load0 = open("/proc/loadavg").read().split()[:3]
for cmd in cmds:
    run(cmd)
got = [[] for _ in cmds]
for r in range(runs):
    for k in range(len(cmds)):
        i = (k + r) % len(cmds)
        got[i].append(run(cmds[i]))
load1 = open("/proc/loadavg").read().split()[:3]
results = []
for cmd, g in zip(cmds, got):
    times = [x[0] for x in g]
    res = {"command": cmd, "median": statistics.median(times), "min": min(times),
           "max": max(times), "times": times,
           "client_cpu": statistics.median(x[1] for x in g),
           "server_cpu": statistics.median(x[2] for x in g),
           "not_idle": sum(1 for x in g if not x[3])}
    results.append(res)
    print(f"  {res['median']:8.3f}s median ({res['min']:.3f} .. {res['max']:.3f}), cpu client"
          f" {res['client_cpu']:.2f}s server {res['server_cpu']:.2f}s   {cmd}", flush=True)
for res in results[1:]:
    print(f"  ratio {results[0]['median'] / res['median']:.2f}x: first command / {res['command']}")
not_idle = sum(r["not_idle"] for r in results)
print(f"  load average before {' '.join(load0)}, after {' '.join(load1)}"
      + (f"; {not_idle} runs started on a machine that did not go idle in"
         f" {os.environ['IDLE_WAIT']} s" if not_idle else ""))
json.dump({"results": results, "load": [load0, load1]}, open(out, "w"), indent=1)
END
export SSHD_PIDFILE="$SSHDIR/sshd.pid" IDLE_WAIT
hf() {
    local name=$1 prepare=$2
    shift 2
    echo
    echo "== $name ($RUNS runs each, interleaved, after one warm-up)"
    python3 "$WORK/timer.py" "$RES/$name.json" "$RUNS" "$prepare" "$@"
}

# 1. First mirror of the 10k tree, the remote folder on tmpfs and then on the disk.
first_mirror() {
    local label=$1 remote=$2 trash=$3
    mkdir -p "$remote" "$trash"
    cat > "$WORK/fresh-$label.sh" <<END
#!/bin/sh
n=\$(date +%s%N)
for p in '$remote'/*; do
    [ -e "\$p" ] || continue
    if [ '$label' = tmpfs ]; then rm -rf "\$p"; else mv "\$p" '$trash'/"\$n-\$(basename "\$p")"; fi
done
rm -rf '$WORK/state/datasafe'
sync
END
    chmod +x "$WORK/fresh-$label.sh"
    hf "1_first_mirror_$label" "'$WORK/fresh-$label.sh'" \
        "'$BIN' sync -q '$WORK/t10k' 'sftp://$HOST$remote/ds'" \
        "rsync -a -e '$SSH' '$WORK/t10k/' '$HOST:$remote/rs/'" \
        "rsync -a --fsync -e '$SSH' '$WORK/t10k/' '$HOST:$remote/rs/'" \
        ${BASE:+"'$BASE' sync -q '$WORK/t10k' 'sftp://$HOST$remote/base'"}
    "$BIN" sync -q "$WORK/t10k" "sftp://$HOST$remote/ds" >/dev/null
    if diff -rq --exclude=.datasafe "$WORK/t10k" "$remote/ds" >/dev/null; then
        echo "  mirror check: datasafe's mirror equals the source"
    else
        echo "  mirror check: DATASAFE'S MIRROR DIFFERS FROM THE SOURCE"
    fi
    sh "$WORK/fresh-$label.sh"
}
first_mirror tmpfs "$FAST/remote" "$FAST/trash"
first_mirror disk "$WORK/remote/a" "$WORK/trash"

# 2. No-op resync of the 100k tree: each tool re-syncs its own up-to-date mirror (remote
# on tmpfs: a no-op writes nothing there, and rsync's listing of it comes from the
# inode cache either way; the first mirrors are quicker to make).
echo
echo "== 2: mirroring the ${B_FILES} tree once for each tool (untimed)"
B="$FAST/b"
mkdir -p "$B"
t0=$(date +%s.%N)
"$BIN" sync -q "$WORK/t100k" "sftp://$HOST$B/ds" >/dev/null
echo "  datasafe first mirror: $(python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f} s')" "$t0")"
t0=$(date +%s.%N)
rsync -a -e "$SSH" "$WORK/t100k/" "$HOST:$B/rs/"
echo "  rsync first mirror: $(python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f} s')" "$t0")"
if [ -n "$BASE" ]; then "$BASE" sync -q "$WORK/t100k" "sftp://$HOST$B/base" >/dev/null; fi
sync
hf 2_noop_resync "true" \
    "'$BIN' sync -q '$WORK/t100k' 'sftp://$HOST$B/ds'" \
    "rsync -a --delete -e '$SSH' '$WORK/t100k/' '$HOST:$B/rs/'" \
    ${BASE:+"'$BASE' sync -q '$WORK/t100k' 'sftp://$HOST$B/base'"}
"$BIN" sync --json "$WORK/t100k" "sftp://$HOST$B/ds" | tail -1 > "$RES/2_check.json"
python3 - "$RES/2_check.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
bad = {k: s[k] for k in ("copied", "deleted", "failed") if s.get(k)}
print("  no-op check:", "ok" if not bad else f"NOT A NO-OP: {bad}", s)
EOF
if diff -rq --exclude=.datasafe "$WORK/t100k" "$B/ds" >/dev/null; then
    echo "  mirror check: datasafe's mirror equals the source"
else
    echo "  mirror check: DATASAFE'S MIRROR DIFFERS FROM THE SOURCE"
fi
rm -rf "$B"

# 3. and 4.: live mirroring with scripts/latency.py; the remote folder on the disk.
# run CASE TOOL SRC [latency.py options...]: one latency.py run of TOOL on SRC, fresh DST.
run() {
    local case=$1 tool=$2 src=$3; shift 3
    local dst="$WORK/remote/$case-$tool" cmd
    rm -rf "$dst" "$WORK/state/datasafe"
    case $tool in
        datasafe) cmd=("$BIN" watch "$src" "sftp://$HOST$dst" --debounce 50ms -q) ;;
        lsyncd) cat > "$WORK/lsyncd-$case.lua" <<EOF
settings { nodaemon = true, inotifyMode = "CloseWrite or Modify" }
sync { default.rsyncssh, source = "$src/", host = "$(id -un)@127.0.0.1", targetdir = "$dst/",
       delay = 0, rsync = { archive = true },
       ssh = { identityFile = "$SSHDIR/user_key", port = $PORT,
               options = { IdentitiesOnly = "yes", UserKnownHostsFile = "/dev/null",
                           StrictHostKeyChecking = "no", LogLevel = "ERROR" } } }
EOF
                cmd=(lsyncd -nodaemon "$WORK/lsyncd-$case.lua") ;;
    esac
    echo "-- $case / $tool (load $(cut -d' ' -f1-3 /proc/loadavg))"
    local rc=0
    python3 "$LATENCY" --src "$src" --dst "$dst" --timeout 900 --probe-timeout "$PROBE_TIMEOUT" \
        --settle-max 300 --resident ssh --log "$RES/$case-$tool.log" --json "$RES/$case-$tool.json" \
        --pidfile "$PIDFILE" "$@" -- "${cmd[@]}" &
    HARNESS_PID=$!
    wait "$HARNESS_PID" || rc=$?
    HARNESS_PID=""
    rm -f "$PIDFILE"
    [ "$rc" = 0 ] || echo "   (latency.py exit $rc: changes were missed or the start-up failed)"
    rm -rf "$src/latency-probe-start" "$dst"
    sync
}
if [ "$NO_WATCH" = 0 ]; then
    echo
    echo "== trees for 3. and 4."
    python3 "$MKTREE" "$WORK/t-watch" --files "$W_FILES" --size-kib 4 --seed 1
    python3 "$MKTREE" "$WORK/t-mem" --files "$M_FILES" --size-kib 1 --seed 2
    sync
    echo "== 3. latency, $N rounds, $W_FILES files watched"
    for tool in datasafe lsyncd; do
        run latency "$tool" "$WORK/t-watch" --n "$N" --idle "$IDLE" --rss
    done
    echo "== 4. memory, $M_FILES files watched"
    for tool in datasafe lsyncd; do
        run memory "$tool" "$WORK/t-mem" --n 0 --idle "$IDLE" --rss
    done
fi

echo
echo "== results (medians; ratio = datasafe / other, lower is better)"
python3 - "$RES" "$A_FILES" "$B_FILES" "$W_FILES" "$M_FILES" "$N" <<'EOF'
import json, os, sys
res, na, nb, nw, nm, n = sys.argv[1], *map(int, sys.argv[2:])
k = lambda x: f"{x // 1000}k" if x >= 1000 else str(x)

def load(name):
    try:
        return json.load(open(os.path.join(res, name + ".json")))
    except (OSError, ValueError):
        return None

rows = []
def row(case, ds, other, ratio="", target="", verdict=""):
    rows.append((case, ds, other, ratio, target, verdict))

for fs in ("tmpfs", "disk"):
    t = load(f"1_first_mirror_{fs}")
    if not t:
        continue
    r = t["results"]
    ds = r[0]["median"]
    for other, label, target in ((r[1], "rsync -a -e ssh", 1.0), (r[2], "rsync -a --fsync -e ssh", None)):
        ratio = ds / other["median"]
        row(f"1. first mirror {k(na)}, remote on {fs}" if target else "", f"{ds:.3f} s",
            f"{label} {other['median']:.3f} s", f"{ratio:.2f}x",
            f"<= {target:.1f}x" if target else "(like-for-like fsync)",
            ("MET" if ratio <= target else "MISSED") if target else "")
    if len(r) > 3:
        row("   vs --base build", f"{ds:.3f} s", f"base {r[3]['median']:.3f} s", f"{ds / r[3]['median']:.2f}x")
    row("   CPU client / server", f"{r[0]['client_cpu']:.2f} / {r[0]['server_cpu']:.2f} s",
        f"rsync {r[1]['client_cpu']:.2f} / {r[1]['server_cpu']:.2f} s")
t = load("2_noop_resync")
if t:
    r = t["results"]
    ratio = r[0]["median"] / r[1]["median"]
    row(f"2. no-op resync {k(nb)}", f"{r[0]['median']:.3f} s", f"rsync -a --delete {r[1]['median']:.3f} s",
        f"{ratio:.2f}x", "<= 0.2x", "MET" if ratio <= 0.2 else "MISSED")
    if len(r) > 2:
        row("   vs --base build", f"{r[0]['median']:.3f} s", f"base {r[2]['median']:.3f} s", f"{r[0]['median'] / r[2]['median']:.2f}x")
    row("   CPU client / server", f"{r[0]['client_cpu']:.2f} / {r[0]['server_cpu']:.2f} s",
        f"rsync {r[1]['client_cpu']:.2f} / {r[1]['server_cpu']:.2f} s")

L = {t: load(f"latency-{t}") or {} for t in ("datasafe", "lsyncd")}
if any(L.values()):
    for kind in ("create", "modify", "delete"):
        for p, limit in (("p50", 100), ("p90", 200)):
            v = {t: L[t].get("latency_ms", {}).get(kind, {}) for t in L}
            def show(t):
                x = v[t].get(p)
                if x is None or x != x:
                    return "-"
                return f"{x:.1f} ms" + ("" if v[t].get("n") == n else f" (n={v[t].get('n')}/{n})")
            d = v["datasafe"].get(p)
            ok = d is not None and d == d and d <= limit
            row(f"3. {kind} {p}, {k(nw)} watched", show("datasafe"), f"lsyncd {show('lsyncd')}", "",
                f"<= {limit} ms", "MET" if ok else "MISSED")
    md, ml = L["datasafe"].get("missed"), L["lsyncd"].get("missed")
    row(f"3. changes missed ({n} x 3)", str(md), f"lsyncd {ml}", "", "0", "MET" if md == 0 else "MISSED")
    for t in L:
        pass
    row(f"3. start-up: first probe mirrored", f"{L['datasafe'].get('startup_s', 0):.1f} s",
        f"lsyncd {L['lsyncd'].get('startup_s', 0):.1f} s")
M = {t: load(f"memory-{t}") or {} for t in ("datasafe", "lsyncd")}
if any(M.values()):
    def mib(t, when, key="VmRSS"):
        x = M[t].get(when, {}).get(key)
        return None if x is None else x / 1024
    d = mib("datasafe", "mem_after_idle_kb")
    row(f"4. VmRSS watching {k(nm)} (after idle)", "-" if d is None else f"{d:.1f} MiB",
        "-" if mib("lsyncd", "mem_after_idle_kb") is None else f"lsyncd {mib('lsyncd', 'mem_after_idle_kb'):.1f} MiB",
        "", "< 64 MiB", "" if d is None else ("MET" if d < 64 else "MISSED"))
    h = mib("datasafe", "mem_after_idle_kb", "VmHWM")
    row("   VmHWM (peak incl. start-up)", "-" if h is None else f"{h:.1f} MiB",
        "-" if mib("lsyncd", "mem_after_idle_kb", "VmHWM") is None else f"lsyncd {mib('lsyncd', 'mem_after_idle_kb', 'VmHWM'):.1f} MiB")
    s = M["datasafe"].get("resident_after_idle_kb")
    row("   its ssh process (VmRSS)", "-" if s is None else f"{s / 1024:.1f} MiB", "")
    row(f"4. start-up: first probe mirrored", f"{M['datasafe'].get('startup_s', 0):.1f} s",
        f"lsyncd {M['lsyncd'].get('startup_s', 0):.1f} s")

head = ("case", "datasafe", "other", "ratio", "target", "verdict")
w = [max(len(r[i]) for r in rows + [head]) for i in range(6)]
print(" | ".join(h.ljust(w[i]) for i, h in enumerate(head)))
print("-|-".join("-" * x for x in w))
for r in rows:
    print(" | ".join(c.rjust(w[i]) if i in (1, 3) else c.ljust(w[i]) for i, c in enumerate(r)))
EOF
