#!/usr/bin/env bash
# Side-by-side benchmark of `datasafe watch --debounce 50ms` against lsyncd (rsync mode,
# default.rsync, delay = 0, inotifyMode "CloseWrite or Modify"), same SRC/DST layout, same
# probes, one tool at a time:
#
#   1. latency   20k-file tree watched: change-to-mirror latency of N creates, modifies
#                (same size, usually within the same second as the create), one-byte-longer
#                rewrites ("resize") and deletes; M same-size rewrites inside one second
#                ('aaaa' then 'bbbb' 100 ms later: does the mirror end with 'bbbb'?);
#                then CPU over a 20 s idle window once start-up has finished.
#   2. memory    100k-file tree watched: VmRSS/VmHWM after start-up and after 20 s idle
#                (and idle CPU again).
#   3. flood     2 x fs.inotify.max_queued_events files created as fast as Python can into
#                a watched folder; time from the first create until all are in DST.
#   4. flood-stopped  the same with the watcher SIGSTOPped while the files are written, so
#                the kernel queue overflows for certain (measures the recovery path).
#
# Targets (datasafe): latency p50 <= 60 ms and p90 <= 100 ms for create, modify, delete;
# 0 changes missed; idle <= 0.05 s CPU per 20 s with 20k files; RSS < 64 MiB with 100k
# files; flood: all files mirrored. The table gives datasafe / lsyncd ratios.
#
# The probes are scripts/latency.py (see its header); trees come from scripts/mktree.py.
# datasafe runs as `target/release/datasafe watch SRC DST --debounce 50ms -q` with
# XDG_STATE_HOME/XDG_CONFIG_HOME pointed into the temp dir (no status file in ~); lsyncd as
# `lsyncd -nodaemon CONFIG` with a generated config. Each run starts with an empty DST.
#
# usage: scripts/bench_watch.sh [--n N] [--same-size M] [--idle S] [--quick] [--keep]
#   --n N          latency rounds per tool (default 50; quick 10)
#   --same-size M  same-size-rewrite probes per tool (default 10; quick 3)
#   --idle S       idle window in seconds (default 20)
#   --quick        small trees (2k and 10k files) and short runs: a smoke test
#   --keep         keep the temp dir (printed at the end)
# Environment: BENCH_TMPDIR  where the temp dir goes (default: $TMPDIR or /tmp);
#              CARGO_TARGET_DIR is honoured when looking for the binary.
# Needs: cargo, python3, lsyncd (2.2.x), rsync.
set -euo pipefail

N=""; SAME=""; IDLE=20; QUICK=0; KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --n) N="$2"; shift ;;
        --same-size) SAME="$2"; shift ;;
        --idle) IDLE="$2"; shift ;;
        --quick) QUICK=1 ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    IDLE_FILES=2000; MEM_FILES=10000; N=${N:-10}; SAME=${SAME:-3}
else
    IDLE_FILES=20000; MEM_FILES=100000; N=${N:-50}; SAME=${SAME:-10}
fi
PROBE_TIMEOUT=2      # per probe: a change not mirrored within 2 s counts as missed

for tool in cargo python3 lsyncd rsync; do
    command -v "$tool" >/dev/null || { echo "bench_watch.sh needs $tool" >&2; exit 2; }
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LATENCY="$ROOT/scripts/latency.py"
MKTREE="$ROOT/scripts/mktree.py"
QUEUE=$(cat /proc/sys/fs/inotify/max_queued_events)
FLOOD=$((2 * QUEUE))

echo "== building (cargo build --release)"
(cd "$ROOT" && cargo build --release --quiet)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/datasafe"
[ -x "$BIN" ] || { echo "no binary at $BIN" >&2; exit 1; }

TMP=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/datasafe-watch-bench.XXXXXX")
RES="$TMP/results"
mkdir -p "$RES" "$TMP/state" "$TMP/config"
PIDFILE="$TMP/cmd.pid"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # latency.py stops its command itself; this covers an interrupted run.
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
    if [ "$KEEP" = 1 ]; then
        echo "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

machine() {
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), " \
         "$(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
    echo "temp dir: $TMP on $(df -T "$TMP" | awk 'NR==2 {print $2 " (" $1 ")"}')"
    echo "datasafe: $BIN ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout')$(cd "$ROOT" && [ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ] && echo ', src modified'))"
    echo "lsyncd: $(lsyncd --version 2>&1 | head -1); rsync: $(rsync --version | head -1 | awk '{print $3}'); python3: $(python3 -c 'import sys; print(sys.version.split()[0])')"
    echo "fs.inotify: max_queued_events=$QUEUE max_user_watches=$(cat /proc/sys/fs/inotify/max_user_watches)"
}

# lsyncd_config SRC DST FILE
lsyncd_config() {
    cat > "$3" <<EOF
settings { nodaemon = true, inotifyMode = "CloseWrite or Modify" }
sync { default.rsync, source = "$1/", target = "$2/", delay = 0, rsync = { archive = true } }
EOF
}

# other_load: load average and how many compilers other people are running right now
other_load() {
    echo "load $(cut -d' ' -f1-3 /proc/loadavg), rustc processes: $(pgrep -c -x rustc || true)"
}

# run CASE TOOL SRC [latency.py options...]: one latency.py run of TOOL on SRC, fresh DST
run() {
    local case=$1 tool=$2 src=$3; shift 3
    local dst="$TMP/dst-$case-$tool" cmd
    rm -rf "$dst"
    case $tool in
        datasafe) cmd=(env XDG_STATE_HOME="$TMP/state" XDG_CONFIG_HOME="$TMP/config"
                       "$BIN" watch "$src" "$dst" --debounce 50ms -q) ;;
        lsyncd) lsyncd_config "$src" "$dst" "$TMP/lsyncd-$case.lua"
                cmd=(lsyncd -nodaemon "$TMP/lsyncd-$case.lua") ;;
    esac
    echo "-- $case / $tool ($(other_load))"
    local rc=0
    python3 "$LATENCY" --src "$src" --dst "$dst" --timeout 900 --probe-timeout "$PROBE_TIMEOUT" \
        --settle-max 300 --log "$RES/$case-$tool.log" --json "$RES/$case-$tool.json" \
        --pidfile "$PIDFILE" "$@" -- "${cmd[@]}" &
    HARNESS_PID=$!
    wait "$HARNESS_PID" || rc=$?
    HARNESS_PID=""
    rm -f "$PIDFILE"
    [ "$rc" = 0 ] || echo "   (latency.py exit $rc: changes were missed or the start-up failed)"
    # Leave SRC as it was; drop the mirror.
    rm -rf "$src/latency-probe-start" "$src"/samesize-* "$src/flood" "$dst"
    # ext4 creates files several times slower while a big delete is still being written
    # back (seen here: 32k creates 0.4 s -> 4 s); flush it before the next case.
    sync
    # overflow seen by the tool?
    grep -qiE 'events were lost|OVERFLOW' "$RES/$case-$tool.log" && echo overflow > "$RES/$case-$tool.overflow" || true
    # inotify watch limit hit? (something else on the machine may lower the sysctl for a
    # while, e.g. a test that sets it to 20): then this run measured the fallback instead.
    if grep -qi 'max_user_watches' "$RES/$case-$tool.log"; then
        echo limit > "$RES/$case-$tool.limit"
        echo "   (the inotify watch limit was hit in this run; max_user_watches is now $(cat /proc/sys/fs/inotify/max_user_watches))"
    fi
}

machine | tee "$RES/machine.txt"
echo "== trees"
python3 "$MKTREE" "$TMP/t-idle" --files "$IDLE_FILES" --size-kib 4 --seed 1
python3 "$MKTREE" "$TMP/t-mem" --files "$MEM_FILES" --size-kib 1 --seed 2
mkdir -p "$TMP/t-flood"
sync
echo "$IDLE_FILES $MEM_FILES $N $SAME $IDLE $FLOOD $QUEUE $PROBE_TIMEOUT" > "$RES/params"

echo "== 1. latency ($N rounds, $SAME same-size rewrites) and idle CPU with $IDLE_FILES files"
for tool in datasafe lsyncd; do
    run latency "$tool" "$TMP/t-idle" --n "$N" --resize --same-size "$SAME" \
        --same-size-wait "$PROBE_TIMEOUT" --idle "$IDLE" --rss
done
echo "== 2. memory and idle CPU with $MEM_FILES files"
for tool in datasafe lsyncd; do
    run memory "$tool" "$TMP/t-mem" --n 0 --idle "$IDLE" --rss
done
echo "== 3. flood of $FLOOD files (2 x max_queued_events)"
for tool in datasafe lsyncd; do
    run flood "$tool" "$TMP/t-flood" --n 0 --idle 0 --flood "$FLOOD" --flood-timeout 600
done
echo "== 4. the same flood written while the watcher is stopped (forced queue overflow)"
for tool in datasafe lsyncd; do
    run flood-stopped "$tool" "$TMP/t-flood" --n 0 --idle 0 --flood "$FLOOD" --flood-stop --flood-timeout 600
done
echo "   after: $(other_load)"

python3 - "$RES" <<'EOF'
import json, os, sys
res = sys.argv[1]
idle_files, mem_files, n, same, idle, flood, queue, probe_timeout = open(f"{res}/params").read().split()
n, same, idle, flood = int(n), int(same), float(idle), int(flood)

def load(case, tool):
    try:
        with open(f"{res}/{case}-{tool}.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}

def overflow(case, tool):
    return os.path.exists(f"{res}/{case}-{tool}.overflow")

L = {t: load("latency", t) for t in ("datasafe", "lsyncd")}
M = {t: load("memory", t) for t in ("datasafe", "lsyncd")}
F = {t: load("flood", t) for t in ("datasafe", "lsyncd")}
S = {t: load("flood-stopped", t) for t in ("datasafe", "lsyncd")}

rows = []
def row(metric, d, l, fmt, target="", verdict="", ratio=True):
    def show(v):
        if v is None:
            return "-"
        return v if isinstance(v, str) else fmt.format(v)
    r = "-"
    if ratio and isinstance(d, (int, float)) and isinstance(l, (int, float)):
        r = f"{d / l:.2f}" if l else ("1.00" if d == 0 else "n/a (lsyncd 0)")
    rows.append((metric, show(d), show(l), r, target, verdict))

def verdict(ok, by=""):
    return "MET" if ok else ("MISSED" + (f" by {by}" if by else ""))

for kind in ("create", "modify", "delete", "resize"):
    for p, limit in (("p50", 60), ("p90", 100)):
        vals = {}
        for t in L:
            k = L[t].get("latency_ms", {}).get(kind, {})
            v = k.get(p)
            vals[t] = None if v is None or v != v else v
        dv, lv = vals["datasafe"], vals["lsyncd"]
        nl = L["lsyncd"].get("latency_ms", {}).get(kind, {}).get("n", 0)
        nd = L["datasafe"].get("latency_ms", {}).get(kind, {}).get("n", 0)
        extra = kind == "resize"
        target = f"<= {limit} ms" if not extra else "(extra)"
        v = "" if extra or dv is None else verdict(dv <= limit, f"{dv - limit:.1f} ms")
        name = f"{kind} {p} (ms)"
        lshow = lv if nl == n or lv is None else f"{lv:.1f} (n={nl}/{n})"
        dshow = dv if nd == n or dv is None else f"{dv:.1f} (n={nd}/{n})"
        row(name, dshow, lshow, "{:.1f}", target, v, ratio=(nl == n and nd == n))
for t in L:
    pass
md = L["datasafe"].get("missed"); ml = L["lsyncd"].get("missed")
row(f"changes missed ({n} rounds x {4} kinds + {same} same-size)", md, ml, "{}", "0",
    "" if md is None else verdict(md == 0, f"{md}"), ratio=False)
def ss(t):
    d = L[t]
    if "same_size_ok" not in d:
        return None
    return f"{d['same_size_ok']}/{same}"
row("same-size rewrite in 1 s ends 'bbbb'", ss("datasafe"), ss("lsyncd"), "{}", f"{same}/{same}",
    "" if ss("datasafe") is None else verdict(L["datasafe"]["same_size_ok"] == same), ratio=False)
def ms(t, key):
    v = [p.get("bbbb_ms") for p in L[t].get("same_size", []) if p.get("bbbb_ms") is not None]
    return sorted(v)[len(v) // 2] if v else None
row("  its latency, p50 of those caught (ms)", ms("datasafe", 0), ms("lsyncd", 0), "{:.1f}")

def idle_row(label, D, check):
    for key, name in (("cpu_threads_s", "schedstat"), ("cpu_ticks_s", "/proc stat ticks")):
        dv = D["datasafe"].get("idle", {}).get(key)
        lv = D["lsyncd"].get("idle", {}).get(key)
        v = ""
        if check and dv is not None:
            v = verdict(dv <= 0.05 * idle / 20, f"{dv - 0.05 * idle / 20:.3f} s ({dv / (0.05 * idle / 20):.1f}x)")
        row(f"idle CPU {idle:.0f} s, {label} ({name}, s)", dv, lv, "{:.3f}",
            f"<= {0.05 * idle / 20:.3f} s" if check else "", v)
    dv = D["datasafe"].get("idle", {}).get("switches")
    lv = D["lsyncd"].get("idle", {}).get("switches")
    row(f"  wake-ups (context switches) in the window", dv, lv, "{}", ratio=False)
idle_row(f"{int(idle_files) // 1000}k files", L, True)
idle_row(f"{int(mem_files) // 1000}k files", M, False)

def mib(D, t, when, key):
    v = D[t].get(when, {}).get(key)
    return None if v is None else v / 1024
for when, label in (("mem_after_startup_kb", "after start-up"), ("mem_after_idle_kb", f"after {idle:.0f} s idle")):
    dv, lv = mib(M, "datasafe", when, "VmRSS"), mib(M, "lsyncd", when, "VmRSS")
    row(f"VmRSS {label}, {int(mem_files) // 1000}k files (MiB)", dv, lv, "{:.1f}", "< 64 MiB",
        "" if dv is None else verdict(dv < 64, f"{dv - 64:.1f} MiB"))
dv, lv = mib(M, "datasafe", "mem_after_idle_kb", "VmHWM"), mib(M, "lsyncd", "mem_after_idle_kb", "VmHWM")
row(f"VmHWM (peak, start-up incl.), {int(mem_files) // 1000}k (MiB)", dv, lv, "{:.1f}", "(< 64 MiB)",
    "" if dv is None else ("within" if dv < 64 else f"over by {dv - 64:.1f} MiB"))
dv, lv = mib(L, "datasafe", "mem_after_idle_kb", "VmRSS"), mib(L, "lsyncd", "mem_after_idle_kb", "VmRSS")
row(f"VmRSS after idle, {int(idle_files) // 1000}k files (MiB)", dv, lv, "{:.1f}")
for D, label in ((L, f"{int(idle_files) // 1000}k"), (M, f"{int(mem_files) // 1000}k")):
    row(f"start-up: first probe mirrored, {label} (s)", D["datasafe"].get("startup_s"), D["lsyncd"].get("startup_s"), "{:.2f}")
    row(f"start-up: CPU quiet again, {label} (s)", D["datasafe"].get("settled_s"), D["lsyncd"].get("settled_s"), "{:.2f}")

for D, case, label in ((F, "flood", "flood"), (S, "flood-stopped", "flood, watcher stopped")):
    f = {t: D[t].get("flood", {}) for t in D}
    def took(t):
        return f[t].get("all_present_s")
    def ok(t):
        return f[t].get("correct") == flood if f[t] else None
    row(f"{label}: {flood} files written in (s)", f["datasafe"].get("write_s"), f["lsyncd"].get("write_s"), "{:.2f}")
    row(f"{label}: all in DST after (s)", took("datasafe"), took("lsyncd"), "{:.2f}")
    def lag(t):
        return None if took(t) is None else took(t) - f[t].get("write_s", 0)
    row(f"{label}:   of which after the last write (s)", lag("datasafe"), lag("lsyncd"), "{:.2f}")
    def correct(t):
        return None if not f[t] else f"{f[t].get('correct')}/{flood}" + (" (overflow)" if overflow(case, t) else "") \
            + (" (watch limit)" if os.path.exists(f"{res}/{case}-{t}.limit") else "")
    row(f"{label}: mirrored with right content", correct("datasafe"), correct("lsyncd"), "{}", "all",
        "" if ok("datasafe") is None else verdict(ok("datasafe"), f"{flood - f['datasafe'].get('correct', 0)} files"), ratio=False)

w = [max(len(r[i]) for r in rows + [("metric", "datasafe", "lsyncd", "ratio", "target", "datasafe")]) for i in range(6)]
head = ("metric", "datasafe", "lsyncd", "ds/lsyncd", "target", "verdict")
print()
print(" | ".join(h.ljust(w[i]) for i, h in enumerate(head)))
print("-|-".join("-" * w[i] for i in range(6)))
for r in rows:
    print(" | ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) if i in (1, 2, 3) else c.ljust(w[i]) for i, c in enumerate(r)))
print()
print(f"latency: {n} rounds per tool, each change waited for at most {probe_timeout} s (then counted as missed); "
      "the modify probe has the create's size and usually its mtime second; resize = one byte longer. "
      "'(overflow)' = the tool logged a kernel queue overflow.")
limited = sorted(f[:-len(".limit")] for f in os.listdir(res) if f.endswith(".limit"))
if limited:
    print(f"WARNING: the inotify watch limit (fs.inotify.max_user_watches) was hit in: {', '.join(limited)}; "
          "those runs measured the tool's fallback, not its normal path.")
EOF
