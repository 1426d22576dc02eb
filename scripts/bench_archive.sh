#!/usr/bin/env bash
# Benchmarks of `datasafe archive` against the usual tools, side by side in one run:
#
#   g1. the 10k-file tree (scripts/mktree.py, seed 1) as zip
#         datasafe archive T out.zip           vs  (cd T && zip -r -q out.zip .)
#   g2. the same tree as tar.zst
#         datasafe archive T out.tar.zst       vs  tar -I 'zstd -T0' -cf out.tar.zst -C T .
#   g3. the same tree as tar.gz (for scale; pigz if installed)
#         datasafe archive T out.tar.gz        vs  tar -I pigz -cf … / tar -czf …
#   g4. peak RSS (/usr/bin/time -v) archiving a tree holding one big file (1 GiB by
#       default, random-ish text from mktree.py --big-mib), as zip and as tar.zst
#
# Both sides use their default levels (deflate 6, zstd 3). Every timing is the median of
# N runs after one warm-up run of each command (the tree is then in the page cache for
# every tool alike); the tools take turns run by run, so a slow spell of a shared machine
# lands on all of them alike. Before each run the previous archive is removed and the
# filesystem synced. datasafe fsyncs the archive before renaming it into place; zip and
# tar do not, so the "+sync" rows time the other tool followed by `sync -f OUT` for a
# like-for-like durability comparison.
#
# usage: scripts/bench_archive.sh [--quick] [--runs N] [--big-mib M] [--keep]
#   --quick     1k files, a 64 MiB big file, 3 runs: a smoke test
#   --runs N    timed runs per command (default 5, quick 3)
#   --big-mib M size of the big file for g4 (default 1024)
# Environment: BENCH_TMPDIR  where the temp dir goes (default: $TMPDIR or /tmp)
# Needs: cargo, python3, zip, tar, zstd, /usr/bin/time; optional: pigz.
set -euo pipefail

QUICK=0
RUNS=""
BIG_MIB=""
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --runs) RUNS="$2"; shift ;;
        --big-mib) BIG_MIB="$2"; shift ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    FILES=1000; BIG_MIB=${BIG_MIB:-64}; RUNS=${RUNS:-3}
else
    FILES=10000; BIG_MIB=${BIG_MIB:-1024}; RUNS=${RUNS:-5}
fi
for tool in cargo python3 zip tar zstd; do
    command -v "$tool" >/dev/null || {
        echo "bench_archive.sh: $tool is not installed (apt-get install -y $tool)" >&2
        exit 1
    }
done
[ -x /usr/bin/time ] || { echo "bench_archive.sh: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
echo "== building (cargo build --release)"
cargo build --release --quiet
BIN="$ROOT/target/release/datasafe"
WORK=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/datasafe-bench-archive.XXXXXX")
cleanup() { if [ "$KEEP" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== machine"
echo "cpu:    $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores)"
echo "source: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo "not a git checkout")"
echo "tools:  $(zip -v | sed -n 2p | sed 's/^ *//'), $(tar --version | head -1), $(zstd --version)"
echo "== generating trees (scripts/mktree.py, seed 1)"
python3 scripts/mktree.py "$WORK/t10k" --files "$FILES" --size-kib 8
python3 scripts/mktree.py "$WORK/big" --files 0 --big-mib "$BIG_MIB"
sync

# The timer: a warm-up round, then $RUNS rounds in rotating order; medians to NAME.json.
cat > "$WORK/timer.py" <<'END'
import json, statistics, subprocess, sys, time
out, runs, prepare, cmds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
def run(cmd):
    subprocess.run(prepare, shell=True, check=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0
for cmd in cmds:
    run(cmd)
got = [[] for _ in cmds]
for r in range(runs):
    for k in range(len(cmds)):
        i = (k + r) % len(cmds)
        got[i].append(run(cmds[i]))
res = []
for cmd, times in zip(cmds, got):
    m = statistics.median(times)
    res.append({"command": cmd, "median": m, "min": min(times), "max": max(times)})
    print(f"  {m:8.3f}s median ({min(times):.3f} .. {max(times):.3f})   {cmd}", flush=True)
json.dump(res, open(out, "w"), indent=1)
END
hf() {
    local name=$1 prepare=$2
    shift 2
    echo
    echo "== $name ($RUNS runs each, interleaved, after one warm-up)"
    python3 "$WORK/timer.py" "$WORK/$name.json" "$RUNS" "$prepare" "$@"
}

T="$WORK/t10k"
O="$WORK/out"
mkdir -p "$O"
PREP="rm -f $O/*; sync"
hf g1_zip "$PREP" \
    "$BIN archive $T $O/a.zip -q" \
    "cd $T && zip -r -q $O/b.zip ." \
    "cd $T && zip -r -q $O/c.zip . && sync -f $O/c.zip"
hf g2_zst "$PREP" \
    "$BIN archive $T $O/a.tar.zst -q" \
    "tar -I 'zstd -T0' -cf $O/b.tar.zst -C $T ." \
    "tar -I 'zstd -T0' -cf $O/c.tar.zst -C $T . && sync -f $O/c.tar.zst"
if command -v pigz >/dev/null; then GZ="tar -I pigz -cf"; else GZ="tar -czf"; fi
hf g3_gz "$PREP" \
    "$BIN archive $T $O/a.tar.gz -q" \
    "$GZ $O/b.tar.gz -C $T ."
# Sizes, from one more run of each.
eval "$PREP"
"$BIN" archive "$T" "$O/a.zip" -q >/dev/null
(cd "$T" && zip -r -q "$O/b.zip" .)
"$BIN" archive "$T" "$O/a.tar.zst" -q >/dev/null
tar -I 'zstd -T0' -cf "$O/b.tar.zst" -C "$T" .
"$BIN" archive "$T" "$O/a.tar.gz" -q >/dev/null
$GZ "$O/b.tar.gz" -C "$T" .
ls -l "$O" | awk 'NR>1 {print "  size " $5 "  " $9}' > "$WORK/sizes.txt"

echo
echo "== g4. peak RSS, one ${BIG_MIB} MiB file"
rm -f "$O"/*
/usr/bin/time -v "$BIN" archive "$WORK/big" "$O/big.zip" -q 2> "$WORK/g4_zip.time" >/dev/null
rm -f "$O"/*
/usr/bin/time -v "$BIN" archive "$WORK/big" "$O/big.tar.zst" -q 2> "$WORK/g4_zst.time" >/dev/null
rm -f "$O"/*
/usr/bin/time -v sh -c "cd $WORK/big && zip -r -q $O/big-zip.zip ." 2> "$WORK/g4_zip_tool.time" >/dev/null
rm -f "$O"/*
/usr/bin/time -v tar -I 'zstd -T0' -cf "$O/big-tar.tar.zst" -C "$WORK/big" . 2> "$WORK/g4_zst_tool.time" >/dev/null
rm -f "$O"/*

echo
python3 - "$WORK" "$FILES" "$BIG_MIB" <<'EOF'
import json, os, re, sys
work, files, big = sys.argv[1], sys.argv[2], sys.argv[3]
med = lambda n: [r["median"] for r in json.load(open(os.path.join(work, n + ".json")))]
print(f"== results (median; ratio = datasafe / other, lower is better; {files} files)")
z, zst, gz = med("g1_zip"), med("g2_zst"), med("g3_gz")
def row(label, ds, other, target=None):
    r = ds / other
    verdict = "" if target is None else ("  target <= %.1fx  %s" % (target, "MET" if r <= target else "MISSED"))
    print(f"{label:<44} {ds:7.3f}s vs {other:7.3f}s  ratio {r:5.2f}{verdict}")
row("g1. zip: archive vs zip -r -q", z[0], z[1], 1.0)
row("g1. zip: archive vs zip -r -q +sync", z[0], z[2])
row("g2. tar.zst: archive vs tar -I 'zstd -T0'", zst[0], zst[1], 1.2)
row("g2. tar.zst: archive vs tar -I 'zstd -T0' +sync", zst[0], zst[2])
row("g3. tar.gz: archive vs tar (pigz if installed)", gz[0], gz[1])
print(open(os.path.join(work, "sizes.txt")).read().rstrip())
def peak(name):
    text = open(os.path.join(work, name + ".time")).read()
    kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text).group(1)
    return kib / 1024, wall
for name, label, target in [("g4_zip", "archive .zip", 64), ("g4_zst", "archive .tar.zst", 64),
                            ("g4_zip_tool", "zip -r -q", None), ("g4_zst_tool", "tar -I 'zstd -T0'", None)]:
    mib, wall = peak(name)
    verdict = "" if target is None else ("  target < %d MiB  %s" % (target, "MET" if mib < target else "MISSED"))
    print(f"g4. {big} MiB file, {label:<20} peak RSS {mib:7.1f} MiB, wall {wall}{verdict}")
EOF
