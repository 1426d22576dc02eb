#!/usr/bin/env bash
# End-to-end benchmarks of `datasafe sync` against the usual tools, side by side:
#
#   a. first mirror of 10k files (~80 MB)       datasafe sync   vs rsync -a
#   b. no-op resync of 100k files               datasafe sync   vs rsync -a --delete
#   c. gzipped mirror of the 10k tree           sync --compress vs tar | pigz -6 -p 2
#                                               sync --compress vs plain sync (same runs;
#                                               issue 15: <= 1.3x on the disk)
#      c on tmpfs (BENCH_SHM, default /dev/shm)  sync --compress vs tar | pigz -6 -p 2
#                                               (issue 15: <= 1.0x)
#   d. one 1 GiB file                           sync --compress vs pigz -6 -p 2 (and peak RSS)
#                                               sync            vs cp
#   e. SHA-256 throughput                       criterion bench vs sha256sum, openssl
#   f. live mirroring                           datasafe watch  vs lsyncd delay = 0
#      (scripts/bench_watch.sh: change→mirror latency p50/p90, missed changes, idle
#      CPU, RSS with 100k files watched, an event flood past the kernel queue)
#   g. one-file archives                        datasafe archive vs zip -r -q, tar -I 'zstd -T0'
#      (scripts/bench_archive.sh: the 10k tree as zip, tar.zst, tar.gz; peak RSS on a
#      big file)
#   h. an SFTP destination (issue 13)         sync/watch to sftp:// vs rsync -e ssh, lsyncd rsyncssh
#      (scripts/bench_sftp.sh: first mirror on tmpfs and disk, no-op resync, live latency,
#      RSS; over a throwaway sshd on 127.0.0.1 that it starts itself)
#   i. scale (issue 15)                         sync vs rsync -a / rsync -a --delete, watch
#      (scripts/bench_scale.sh: 10k, 100k, 1M files on tmpfs and on disk; first mirror and
#      no-op resync, time and peak RSS as ratios; watch start-up, RSS, one fallback
#      rescan's CPU; writes docs/scale.tsv and the plot docs/scale.png; an hour or more)
#
# Every timing is the median of N runs, after one warm-up run of every command (so the
# source is in the page cache for every tool alike). The tools take turns, run by run,
# so a slow spell of a shared machine lands on all of them alike. Before each run the
# previous output is moved aside and `sync` flushes the filesystem, so no tool pays for
# another's dirty pages. Deleting many files makes the next file creations on ext4
# slower for a few minutes, so leave 5 minutes after deleting a big tree (or a previous
# run of this script) before running it.
#
# datasafe ends every run with syncfs(2) on the destination (its data is on disk when it
# exits); rsync, tar|pigz and cp do not, so rows marked "+sync" time the other tool
# followed by `sync -f DST` (the same syncfs) for a like-for-like durability comparison,
# and the time datasafe spends inside syncfs is reported per case.
#
# usage: scripts/bench.sh [--quick] [--runs N] [--keep] [--no-watch] [--no-archive] [--no-sftp]
#                         [--no-scale] [--base BIN] [--cases LIST] [--idle-wait S] [--redo N]
#   --quick   small sizes (1k files, 5k no-op files, 64 MiB big file), 3 runs: smoke test
#   --runs N  timed runs per command (default 5, quick 3)
#   --keep    keep the temp dir (printed at the end) for poking at afterwards
#   --no-watch  skip f. (which needs lsyncd)
#   --no-archive  skip g. (which needs zip and zstd)
#   --no-sftp   skip h. (which needs openssh-server, and lsyncd for its live part)
#   --no-scale  skip i. (the longest part: a million files, twice)
#   --base BIN  also time another datasafe binary (e.g. the last release) in a. to c., h. and i.,
#             beside this checkout's, for a before/after ratio of the same runs
#   --cases LIST  only these of a. to e., comma-separated letters (default a,b,c,d,e); f. to h.
#             follow their own flags above
#   --idle-wait S  how long each timed run waits for the machine to go idle (default 120)
#   --redo N  how many times a run during which other work used the CPU is run again
#             (default 5)
# Environment: BENCH_TMPDIR  where the temp dir goes (default: $TMPDIR or /tmp)
#              BENCH_SHM     a tmpfs folder for c. on tmpfs (default /dev/shm; skipped if it
#                            is not a tmpfs)
#
# Needs: cargo, python3, rsync, pigz, tar, cp, /usr/bin/time, sha256sum;
# optional: cc (to time datasafe's syncfs calls), openssl; for f.: lsyncd; for g.: zip, zstd;
# for h.: ssh, sshd (openssh-server), lsyncd; for i.: ~18 GB free in /var/tmp and ~13 GB
# of RAM for /dev/shm, gnuplot (optional, for the plot).
set -euo pipefail

QUICK=0
RUNS=""
KEEP=0
NO_WATCH=0
NO_ARCHIVE=0
NO_SFTP=0
NO_SCALE=0
BASE=""
CASES="a,b,c,d,e"
IDLE_WAIT=120
REDO=5
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --runs) RUNS="$2"; shift ;;
        --keep) KEEP=1 ;;
        --no-watch) NO_WATCH=1 ;;
        --no-archive) NO_ARCHIVE=1 ;;
        --no-sftp) NO_SFTP=1 ;;
        --no-scale) NO_SCALE=1 ;;
        --base) BASE="$2"; shift ;;
        --cases) CASES="$2"; shift ;;
        --idle-wait) IDLE_WAIT="$2"; shift ;;
        --redo) REDO="$2"; shift ;;
        -h|--help) sed -n '2,64p' "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

# want X: true if case X is to run.
want() { case ",$CASES," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

if [ "$QUICK" = 1 ]; then
    A_FILES=1000;   A_KIB=8
    B_FILES=5000;   B_KIB=1
    BIG_MIB=64
    RUNS=${RUNS:-3}
else
    A_FILES=10000;  A_KIB=8     # ~82 MB
    B_FILES=100000; B_KIB=1     # contents do not matter to a no-op run; keeps setup short
    BIG_MIB=1024
    RUNS=${RUNS:-5}
fi

for tool in cargo python3 rsync pigz tar cp sha256sum; do
    command -v "$tool" >/dev/null || { echo "bench.sh: $tool is not installed" >&2; exit 1; }
done
if [ ! -x /usr/bin/time ]; then
    echo "bench.sh: /usr/bin/time is missing (apt-get install time)" >&2
    exit 1
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
echo "== building (cargo build --release)"
cargo build --release --quiet
BIN="$ROOT/target/release/datasafe"

export IDLE_WAIT REDO
WORK=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/datasafe-bench.XXXXXX")
cleanup() {
    if [ -n "${SHM_WORK:-}" ]; then rm -rf "$SHM_WORK"; fi
    if [ "$KEEP" = 1 ]; then
        echo "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== machine"
echo "cpu:    $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores)"
echo "kernel: $(uname -r)"
echo "source: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo "not a git checkout") ($ROOT)"
echo "fs:     $(df -T "$WORK" | awk 'NR==2 {print $2 " on " $1}') ($WORK)"
echo "tools:  $(rsync --version | head -1 | awk '{print "rsync " $3}'), pigz $(pigz --version 2>&1 | awk '{print $2}'), $(tar --version | head -1), $(cp --version | head -1)"

echo "== generating trees (scripts/mktree.py, seed 1)"
if want a || want c; then
    python3 scripts/mktree.py "$WORK/t10k" --files "$A_FILES" --size-kib "$A_KIB"
fi
want b && python3 scripts/mktree.py "$WORK/t100k" --files "$B_FILES" --size-kib "$B_KIB"
if want d || want e; then
    python3 scripts/mktree.py "$WORK/big" --files 0 --big-mib "$BIG_MIB"
fi
# c. on tmpfs: the same tree in a folder of its own there, removed at the end.
SHM_WORK=""
SHM=${BENCH_SHM:-/dev/shm}
if want c && [ "$(stat -f -c %T "$SHM" 2>/dev/null)" = tmpfs ]; then
    SHM_WORK=$(mktemp -d "$SHM/datasafe-bench.XXXXXX")
    python3 scripts/mktree.py "$SHM_WORK/t10k" --files "$A_FILES" --size-kib "$A_KIB"
fi
sync

# The timer: one warm-up round, then $RUNS rounds, each round running every command once
# (PREPARE before each, untimed) in an order that rotates from round to round. The tools
# take turns rather than running back to back, so a slow spell of this shared VM lands
# on all of them alike. Writes medians, min, max and CPU times to $WORK/NAME.json.
# Other work on the machine (a test suite, a build) would distort the figures, so each
# run waits for the machine to be idle first (at most --idle-wait seconds), and a run during
# which any other process used more than a tenth of a core on average is thrown away and
# run again (up to --redo times; such runs are counted as "redone"). Kernel threads are not counted as other
# work: their writeback is what the runs themselves cause.
cat > "$WORK/timer.py" <<'END'
import json, os, resource, statistics, subprocess, sys, time

HZ = os.sysconf("SC_CLK_TCK")

def kthreads():
    """CPU seconds spent by kernel threads (writeback, block I/O) since they started."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2:].split()
        if int(f[6]) & 0x00200000:  # PF_KTHREAD
            total += int(f[11]) + int(f[12])
    return total / HZ

def busy():
    """CPU seconds the machine has spent busy since boot, kernel threads excluded: they
    do the writeback that a run's own syncfs or page cache causes."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = f[3] + f[4]
    return (sum(f[:8]) - idle) / HZ - kthreads()

def wait_idle(limit=float(os.environ.get("IDLE_WAIT", "120"))):
    start = time.monotonic()
    while time.monotonic() - start < limit:
        b0, t0 = busy(), time.monotonic()
        time.sleep(0.3)
        if (busy() - b0) / (time.monotonic() - t0) < 0.1:
            return
    print(f"  (the machine did not go idle within {limit:.0f} s; timing anyway)", flush=True)

def run(cmd, tag):
    for attempt in range(int(os.environ.get("REDO", "5")) + 1):
        os.environ["BENCH_RUN"] = f"{tag}.{attempt}"
        subprocess.run(prepare, shell=True, check=True)
        wait_idle()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        b0 = busy()
        t0 = time.perf_counter()
        subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        foreign = busy() - b0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        user, sys_ = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
        foreign -= user + sys_
        if foreign <= 0.1 * wall + 2.0 / HZ:
            break
    return wall, user, sys_, attempt, os.environ["BENCH_RUN"]

if sys.argv[1] == "--wait-idle":
    sys.exit(wait_idle())
out, runs, prepare, cmds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
for i, cmd in enumerate(cmds):
    run(cmd, f"{i}.warmup")  # the source into the page cache, the binaries into memory
got = [[] for _ in cmds]
for r in range(runs):
    for k in range(len(cmds)):
        i = (k + r) % len(cmds)
        got[i].append(run(cmds[i], f"{i}.{r}"))
results = []
for cmd, g in zip(cmds, got):
    times = [x[0] for x in g]
    res = {"command": cmd, "median": statistics.median(times), "min": min(times),
           "max": max(times), "times": times,
           "user": statistics.median(x[1] for x in g),
           "system": statistics.median(x[2] for x in g),
           "redone": sum(x[3] for x in g), "runs": [x[4] for x in g]}
    results.append(res)
    print(f"  {res['median']:8.3f}s median ({res['min']:.3f} .. {res['max']:.3f}),"
          f" user {res['user']:.2f}s, sys {res['system']:.2f}s, redone {res['redone']}   {cmd}")
for res in results[1:]:
    print(f"  ratio {results[0]['median'] / res['median']:.2f}x: first command / {res['command']}")
json.dump({"results": results}, open(out, "w"), indent=1)
END
# hf NAME PREPARE CMD...: times the CMDs as above into $WORK/NAME.json.
hf() {
    local name=$1 prepare=$2
    shift 2
    echo
    echo "== $name ($RUNS runs each, interleaved, after one warm-up)"
    python3 "$WORK/timer.py" "$WORK/$name.json" "$RUNS" "$prepare" "$@"
}

D="$WORK/dst"
OUT="$WORK/out"
TRASH="$WORK/trash"
mkdir -p "$TRASH"
# Before each run of a many-files case: move the previous run's output aside (into a
# trash folder emptied only at the very end) and flush the filesystem. Moving frees no
# inode. Deleting thousands of files would make ext4 without a journal (as here) skip
# every inode freed in the last 5 s (300 s while its inode-table block is dirty) when it
# allocates new ones (find_inode_bit -> recently_deleted): a kernel cost that a real
# first mirror does not pay, charged to whichever tool happens to run next.
cat > "$WORK/fresh.sh" <<END
#!/bin/sh
n=\$(date +%s%N)
for p in '$D' '$OUT' '$OUT.gz' '$OUT.tar.gz'; do
    if [ -e "\$p" ]; then mv "\$p" "$TRASH/\$n-\$(basename "\$p")"; fi
done
sync
END
chmod +x "$WORK/fresh.sh"
fresh="'$WORK/fresh.sh'"
# For the one-big-file cases deleting is harmless (one inode) and saves disk space.
fresh_rm="rm -rf '$D' '$OUT' '$OUT.gz' '$OUT.tar.gz'; sync"

# datasafe's syncfs(2) calls are timed in the very runs that are timed: every datasafe
# command runs with a tiny LD_PRELOAD shim that wraps syncfs and appends "run seconds"
# per call to $WORK/syncfs-CASE.log (two clock reads and a line of output per call;
# nothing else in the process is touched). Needs a C compiler; without one, no shim.
SHIM=""
if command -v cc >/dev/null; then
    cat > "$WORK/syncfs_timer.c" <<'END'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int syncfs(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "syncfs");
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int r = real(fd);
    clock_gettime(CLOCK_MONOTONIC, &b);
    const char *log = getenv("SYNCFS_LOG");
    FILE *f = log ? fopen(log, "a") : NULL;
    if (f) {
        const char *run = getenv("BENCH_RUN");
        fprintf(f, "%s %.6f\n", run ? run : "-",
                (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
        fclose(f);
    }
    return r;
}
END
    if cc -O2 -shared -fPIC -o "$WORK/syncfs_timer.so" "$WORK/syncfs_timer.c" -ldl; then
        SHIM="$WORK/syncfs_timer.so"
    fi
fi
# ds_env CASE: the environment assignments that time datasafe's syncfs calls for CASE.
ds_env() {
    if [ -n "$SHIM" ]; then
        printf "LD_PRELOAD='%s' SYNCFS_LOG='%s' " "$SHIM" "$WORK/syncfs-$1.log"
    fi
}

# a. First mirror of the 10k tree.
if want a; then
hf a_first_mirror "$fresh" \
    "$(ds_env a)'$BIN' sync -q '$WORK/t10k' '$D'" \
    "rsync -a '$WORK/t10k/' '$D/'" \
    "rsync -a '$WORK/t10k/' '$D/' && sync -f '$WORK'" \
    ${BASE:+"'$BASE' sync -q '$WORK/t10k' '$D'"}
sh -c "$fresh"
fi

# b. No-op resync of the 100k tree: each tool re-syncs its own up-to-date mirror.
if want b; then
echo
echo "== b: mirroring the 100k tree once for each tool (untimed)"
"$BIN" sync -q "$WORK/t100k" "$WORK/b_ds" >/dev/null
rsync -a "$WORK/t100k/" "$WORK/b_rs/"
if [ -n "$BASE" ]; then "$BASE" sync -q "$WORK/t100k" "$WORK/b_base" >/dev/null; fi
sync
hf b_noop_resync "sync" \
    "$(ds_env b)'$BIN' sync -q '$WORK/t100k' '$WORK/b_ds'" \
    "rsync -a --delete '$WORK/t100k/' '$WORK/b_rs/'" \
    ${BASE:+"'$BASE' sync -q '$WORK/t100k' '$WORK/b_base'"}
# A no-op must copy nothing: check it once, and that both mirrors are complete.
"$BIN" sync --json "$WORK/t100k" "$WORK/b_ds" | tail -1 > "$WORK/b_check.json"
python3 - "$WORK/b_check.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
bad = {k: s[k] for k in ("copied", "deleted", "failed") if s.get(k)}
print("no-op check:", "ok" if not bad else f"NOT A NO-OP: {bad}", s)
EOF
if diff -rq --exclude=.datasafe "$WORK/t100k" "$WORK/b_ds" >/dev/null; then
    echo "mirror check: datasafe's mirror equals the source"
else
    echo "mirror check: DATASAFE'S MIRROR DIFFERS FROM THE SOURCE"
fi
fi

# c. Gzipped mirror of the 10k tree vs one tar.gz stream, and vs datasafe's own plain
# mirror of the same tree in the same rounds (issue 15: gzip overlapped with the I/O).
if want c; then
hf c_compress "$fresh" \
    "$(ds_env c)'$BIN' sync -q --compress '$WORK/t10k' '$D'" \
    "tar -cf - -C '$WORK/t10k' . | pigz -6 -p 2 > '$OUT.tar.gz'" \
    "tar -cf - -C '$WORK/t10k' . | pigz -6 -p 2 > '$OUT.tar.gz' && sync -f '$WORK'" \
    "$(ds_env c_plain)'$BIN' sync -q '$WORK/t10k' '$D'" \
    ${BASE:+"'$BASE' sync -q --compress '$WORK/t10k' '$D'"}
"$BIN" sync -q --compress "$WORK/t10k" "$D" >/dev/null
tar -cf - -C "$WORK/t10k" . | pigz -6 -p 2 > "$OUT.tar.gz"
echo "sizes: source $(du -sb "$WORK/t10k" | cut -f1) B (apparent, incl. dirs);" \
    "datasafe --compress $(du -sb --exclude=.datasafe "$D" | cut -f1) B; tar.gz $(stat -c %s "$OUT.tar.gz") B"
sh -c "$fresh"
# The same on tmpfs, where nothing waits for a disk: what is left is CPU.
if [ -n "$SHM_WORK" ]; then
    SD="$SHM_WORK/dst"
    SOUT="$SHM_WORK/out.tar.gz"
    hf c_tmpfs "rm -rf '$SD' '$SOUT'" \
        "'$BIN' sync -q --compress '$SHM_WORK/t10k' '$SD'" \
        "tar -cf - -C '$SHM_WORK/t10k' . | pigz -6 -p 2 > '$SOUT'" \
        "'$BIN' sync -q '$SHM_WORK/t10k' '$SD'" \
        ${BASE:+"'$BASE' sync -q --compress '$SHM_WORK/t10k' '$SD'"}
    rm -rf "$SD" "$SOUT"
else
    echo "(c. on tmpfs skipped: $SHM is not a tmpfs; set BENCH_SHM)"
fi
fi

# d. One big file: gzipped (with peak RSS of every run) and plain.
RSS="$WORK/rss"
if want d; then
hf d_big_gzip "$fresh_rm" \
    "$(ds_env d_gzip)/usr/bin/time -f %M -a -o '$RSS.ds' '$BIN' sync -q --compress '$WORK/big' '$D'" \
    "/usr/bin/time -f %M -a -o '$RSS.pigz' pigz -6 -p 2 -c '$WORK/big/big.bin' > '$OUT.gz'" \
    "/usr/bin/time -f %M -a -o '$RSS.pigzs' pigz -6 -p 2 -c '$WORK/big/big.bin' > '$OUT.gz' && sync -f '$WORK'"
hf d_big_copy "$fresh_rm" \
    "$(ds_env d_copy)'$BIN' sync -q '$WORK/big' '$D'" \
    "cp '$WORK/big/big.bin' '$OUT'" \
    "cp '$WORK/big/big.bin' '$OUT' && sync -f '$WORK'"
fi
# e. SHA-256: the criterion bench (64 MiB in memory) and, for scale, sha256sum and
# openssl over the big file from the page cache.
echo
if want e; then
echo "== e_sha256 (cargo bench --bench engine -- hash)"
bench_args=(--noplot)
[ "$QUICK" = 1 ] && bench_args+=(--quick)
cargo bench --quiet --bench engine --no-run
python3 "$WORK/timer.py" --wait-idle
cargo bench --quiet --bench engine -- "${bench_args[@]}" hash 2>&1 | grep -E "time:|thrpt:" || true
cat "$WORK/big/big.bin" >/dev/null
e_cmds=("sha256sum '$WORK/big/big.bin'")
command -v openssl >/dev/null && e_cmds+=("openssl dgst -sha256 '$WORK/big/big.bin'")
hf e_sha256 "true" "${e_cmds[@]}"
fi

echo
echo "== results (median of $RUNS runs; ratio = datasafe / other, lower is better)"
BENCH_BASE="$BASE" python3 - "$WORK" "$ROOT/target/criterion/hash/sha256/64MiB/new/estimates.json" "$BIG_MIB" \
    "$A_FILES" "$B_FILES" <<'EOF'
import json, os, statistics, sys
work, crit, big_mib = sys.argv[1], sys.argv[2], int(sys.argv[3])
big = big_mib << 20
na, nb = (f"{int(n) // 1000}k" for n in sys.argv[4:6])

def load(name):
    """The timer's results for case NAME, or None if the case did not run."""
    try:
        return json.load(open(os.path.join(work, name + ".json")))["results"]
    except FileNotFoundError:
        return None

def med(name):
    got = load(name)
    return None if got is None else [r["median"] for r in got]

def rss(tag):
    try:
        vals = [int(l) for l in open(os.path.join(work, "rss." + tag)) if l.strip().isdigit()]
    except FileNotFoundError:
        return None
    return max(vals) / 1024 if vals else None

rows = []  # (case, datasafe s, other label, other s, target ratio or None)
a = med("a_first_mirror")
if a:
    rows += [(f"a. first mirror {na} files", a[0], "rsync -a", a[1], 0.8),
             ("", a[0], "rsync -a +sync", a[2], None)]
b = med("b_noop_resync")
if b:
    rows += [(f"b. no-op resync {nb} files", b[0], "rsync -a --delete", b[1], 0.5)]
c = med("c_compress")
if c:
    rows += [(f"c. --compress {na} files", c[0], "tar | pigz -6 -p 2", c[1], 1.0),
             ("", c[0], "tar | pigz +sync", c[2], None),
             ("c. --compress vs plain", c[0], "datasafe sync", c[3], 1.3)]
ct = med("c_tmpfs")
if ct:
    rows += [(f"c. tmpfs: --compress {na}", ct[0], "tar | pigz -6 -p 2", ct[1], 1.0),
             ("", ct[0], "datasafe sync", ct[2], None)]
# --base: the same runs of another datasafe build (the last column of a. to c.).
if BASE := os.environ.get("BENCH_BASE"):
    for label, got, i in [("a. vs --base build", a, 3), ("b. vs --base build", b, 2),
                          ("c. vs --base build", c, 4), ("c. tmpfs vs --base build", ct, 3)]:
        if got and len(got) > i:
            rows += [(label, got[0], "datasafe (base)", got[i], 1.05)]
d = med("d_big_gzip")
if d:
    rows += [(f"d. --compress {big_mib} MiB file", d[0], "pigz -6 -p 2", d[1], None),
             ("", d[0], "pigz -6 -p 2 +sync", d[2], None)]
dc = med("d_big_copy")
if dc:
    rows += [(f"d. copy {big_mib} MiB file", dc[0], "cp", dc[1], None),
             ("", dc[0], "cp +sync", dc[2], None)]

print(f"{'case':<28} {'datasafe':>9} {'other':<20} {'other':>9} {'ratio':>6}  target")
for case, ds, label, other, target in rows:
    ratio = ds / other
    if target is None:
        verdict = "(context)"
    else:
        verdict = f"<= {target:.1f}x  {'MET' if ratio <= target else 'MISSED'}"
    print(f"{case:<28} {ds:>8.3f}s {label:<20} {other:>8.3f}s {ratio:>5.2f}x  {verdict}")

# Where c.'s time is CPU: user + system seconds (medians) against the wall time. Two
# cores give at most 2 CPU seconds a second; a run far under that waited.
for name, labels in [("c_compress", ["--compress", "tar | pigz", None, "plain sync"]),
                     ("c_tmpfs", ["tmpfs --compress", "tmpfs tar | pigz", "tmpfs plain sync"])]:
    got = load(name)
    if got:
        print(f"{name}: CPU (user+sys) / wall: " + ", ".join(
            f"{label} {r['user'] + r['system']:.2f}/{r['median']:.2f} s"
            for label, r in zip(labels, got) if label))

ds_rss, pigz_rss = rss("ds"), rss("pigz")
if ds_rss is not None:
    verdict = "MET" if ds_rss < 64 else "MISSED"
    print(f"d. peak RSS, --compress {big_mib} MiB: datasafe {ds_rss:.1f} MiB"
          f" (pigz {pigz_rss:.1f} MiB)  target < 64 MiB  {verdict}")
if d and dc:
    print(f"d. throughput: datasafe --compress {big / d[0] / 1e6:.0f} MB/s, pigz -p 2 {big / d[1] / 1e6:.0f} MB/s;"
          f" datasafe copy {big / dc[0] / 1e6:.0f} MB/s, cp {big / dc[1] / 1e6:.0f} MB/s")

# syncfs time per timed run (the runs the timer kept: no warm-up, no redone run).
def syncfs(case, name, col=0):
    if not os.path.exists(os.path.join(work, "syncfs_timer.so")):
        return None
    try:
        rows = [l.split() for l in open(os.path.join(work, f"syncfs-{case}.log")) if l.strip()]
    except FileNotFoundError:
        rows = []  # no syncfs call at all
    kept = load(name)[col]["runs"]
    per_run = {run: 0.0 for run in kept}
    calls = {run: 0 for run in kept}
    for run, secs in rows:
        # The timer tags runs "COMMAND.ROUND.TRY": keep those of this command only.
        if run in per_run:
            per_run[run] += float(secs)
            calls[run] += 1
    return max(calls.values()), statistics.median(per_run.values())

sf = [(f"a. first mirror {na} files", "a", "a_first_mirror", 0),
      (f"b. no-op resync {nb} files", "b", "b_noop_resync", 0),
      (f"c. --compress {na} files", "c", "c_compress", 0),
      (f"c. plain sync {na} files", "c_plain", "c_compress", 3),
      (f"d. --compress {big_mib} MiB", "d_gzip", "d_big_gzip", 0),
      (f"d. copy {big_mib} MiB", "d_copy", "d_big_copy", 0)]
got = [(label, syncfs(case, name, col), med(name)[col]) for label, case, name, col in sf
       if load(name)]
if got and all(g and g[0] == 0 for _, g, _ in got):
    # A first mirror always ends with syncfs: none seen means the shim missed them
    # (rustix makes the system call itself, not through libc).
    print()
    print("datasafe's syncfs(2) calls were not seen by the LD_PRELOAD shim; not timed")
elif any(g for _, g, _ in got):
    print()
    print(f"{'datasafe syncfs(2), timed runs':<28} {'calls':>5} {'in syncfs':>10} {'run':>9} {'share':>6}  (medians)")
    for label, g, wall in got:
        if g:
            calls, insync = g
            print(f"{label:<28} {calls:>5} {insync:>9.3f}s {wall:>8.3f}s {insync / wall:>6.0%}")
print()

e = med("e_sha256")
if e:
    try:
        est = json.load(open(crit))
        crit_gbs = (64 << 20) / (est["median"]["point_estimate"] / 1e9) / 1e9
        verdict = "MET" if crit_gbs >= 1.0 else "MISSED"
        print(f"e. SHA-256 (datasafe::hash::hash_reader, 64 MiB in memory): {crit_gbs:.2f} GB/s"
              f"  target >= 1 GB/s  {verdict}")
    except (FileNotFoundError, KeyError):
        print("e. SHA-256: criterion estimates not found")
    names = ["sha256sum", "openssl dgst -sha256"]
    print("e. for scale, over the cached big file: " +
          ", ".join(f"{n} {big / t / 1e9:.2f} GB/s" for n, t in zip(names, e)))
EOF

if [ "$NO_WATCH" = 0 ]; then
    echo
    echo "== f. live mirroring: datasafe watch vs lsyncd (scripts/bench_watch.sh)"
    if [ "$QUICK" = 1 ]; then
        "$ROOT/scripts/bench_watch.sh" --quick
    else
        "$ROOT/scripts/bench_watch.sh"
    fi
fi

if [ "$NO_ARCHIVE" = 0 ]; then
    echo
    echo "== g. one-file archives: datasafe archive vs zip, tar+zstd (scripts/bench_archive.sh)"
    if [ "$QUICK" = 1 ]; then
        "$ROOT/scripts/bench_archive.sh" --quick
    else
        "$ROOT/scripts/bench_archive.sh"
    fi
fi

if [ "$NO_SFTP" = 0 ]; then
    echo
    echo "== h. SFTP destination: sync/watch to sftp:// vs rsync -e ssh, lsyncd rsyncssh (scripts/bench_sftp.sh)"
    sftp_args=()
    [ "$QUICK" = 1 ] && sftp_args+=(--quick)
    [ -n "$BASE" ] && sftp_args+=(--base "$BASE")
    "$ROOT/scripts/bench_sftp.sh" "${sftp_args[@]}"
fi

if [ "$NO_SCALE" = 0 ]; then
    echo
    echo "== i. scale: 10k, 100k, 1M files, sync vs rsync, watch (scripts/bench_scale.sh)"
    scale_args=(--bin "$BIN")
    [ "$QUICK" = 1 ] && scale_args+=(--quick)
    [ -n "$BASE" ] && scale_args+=(--base "$BASE")
    "$ROOT/scripts/bench_scale.sh" "${scale_args[@]}"
fi
