#!/usr/bin/env bash
# The scale part of the benchmarks (issue 15): time and peak RSS of datasafe and rsync
# against the number of files, on tmpfs and on the disk, and what `watch` costs at each size.
#
# For each place (tmpfs: /dev/shm, disk: /var/tmp) and size (10k, 100k, 1M files of ~1 KiB,
# scripts/mktree.py --seed 1, so every run sees the same trees):
#   first mirror   datasafe sync -q SRC DST   vs rsync -a SRC/ DST/ (on disk also "+sync":
#                  rsync then `sync -f`, as datasafe ends with syncfs(2))
#   no-op resync   datasafe sync -q SRC DST   vs rsync -a --delete SRC/ DST/ (each on its own
#                  up-to-date mirror; every datasafe run is checked to copy nothing)
#   watch          datasafe watch SRC DST --rescan R on its up-to-date mirror: time until the
#                  "watching" line, time until the start-up reconcile is done (the status
#                  file lists the pair), VmHWM then, VmRSS after a few idle seconds, and the
#                  CPU seconds of one fallback rescan (the --rescan timer's full pass)
# Times are medians of N interleaved runs after a warm-up, as in scripts/bench.sh (whose
# header explains the idle wait and the redone runs); peak RSS is /usr/bin/time's %M.
# 1M files get one timed run (--big-runs), and their first mirror no warm-up; the output
# says so. A size is skipped, with a message, if the place has not room for its copies
# (on tmpfs the machine's free memory counts too: tmpfs pages cannot be evicted). The results are merged into a TSV (default docs/scale.tsv) and drawn from it
# into a PNG (default docs/scale.png) with gnuplot; the tables are printed in markdown, as
# BENCHMARKS.md shows them.
#
# usage: scripts/bench_scale.sh [--sizes N,N,...] [--where tmpfs,disk] [--runs N]
#                               [--big-runs N] [--bin PATH] [--base BIN] [--no-watch]
#                               [--rescan S] [--watch-idle S] [--idle-wait S] [--quick]
#                               [--tsv FILE] [--png FILE] [--keep] [--report-only]
#   --sizes     file counts (default 10000,100000,1000000)
#   --where     places (default tmpfs,disk)
#   --runs N    timed runs per command below 1M files (default 3)
#   --big-runs N  timed runs per command from 1M files on (default 1)
#   --big-from N  where "big" starts (default 1000000): one timed run, no first-mirror
#               warm-up, no "+sync" row, one tool after the other (on tmpfs each tool's
#               mirror deleted before the next), so at most the source and one or two
#               copies exist at once
#   --size-kib K  mean file size (default 1; mktree.py's --size-kib)
#   --tools LIST  which of datasafe,rsync,base to run (default all that apply)
#   --bin PATH  time this datasafe binary instead of building this checkout (for example
#               another worktree's target/release/datasafe)
#   --base BIN  also time another datasafe binary beside it (rows "base")
#   --no-watch  skip the watch part
#   --rescan S  the fallback rescan period for the watch part (default 10)
#   --watch-idle S  idle seconds before the watcher's RSS is read (default 5)
#   --idle-wait S   the longest each run waits for the machine to go idle (default 120)
#   --redo N    how often a run disturbed by other work is run again (default 5)
#   --quick     1k and 10k files, 2 runs: a smoke test (results go to a temp TSV and PNG
#               unless --tsv/--png say otherwise, so docs/ keeps the real figures)
#   --tsv FILE, --png FILE  where the results go (default docs/scale.tsv, docs/scale.png)
#   --keep      keep the temp dirs (printed)
#   --report-only  print the tables and redraw the plot from the TSV; measure nothing
# Environment: BENCH_TMPFS (default /dev/shm), BENCH_DISK (default /var/tmp).
#
# Needs: cargo (unless --bin), python3, rsync, /usr/bin/time (Debian package `time`);
# for the plot gnuplot (Debian package gnuplot-nox; without it the plot is skipped).
# Space: 1M files of ~1 KiB take ~4.3 GB per copy (one 4 KiB block or page per small file)
# and ~1.1M inodes (mind `df -i`: /dev/shm's inode limit, an image's mkfs -i); at most the
# source and two copies exist at once: ~9 GB of RAM in /dev/shm (plus a 4 GiB margin),
# ~13 GB in /var/tmp (plus 5 GiB). Time: 10k and 100k on both places ~60 minutes on a busy
# 2-core machine (a third of it deleting the disk's moved-aside copies); 1M adds per place
# its tree (tmpfs 2 minutes, disk 5), one run of each command (~8 minutes for the engine
# of 93e9276), and on disk deleting the copies (tens of minutes on this ext4 with discard).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=""
QUICK=0
TSV=""
PNG=""
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN="$2"; shift ;;
        --quick) QUICK=1 ;;
        --tsv) TSV="$2"; shift ;;
        --png) PNG="$2"; shift ;;
        --sizes|--where|--runs|--big-runs|--big-from|--base|--tools|--size-kib|--rescan|--watch-idle|--idle-wait|--redo)
            ARGS+=("$1" "$2"); shift ;;
        --no-watch|--keep|--report-only) ARGS+=("$1") ;;
        -h|--help) sed -n '2,60p' "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

RESULTS=$(mktemp -d "${TMPDIR:-/tmp}/datasafe-scale-results.XXXXXX")
if [ "$QUICK" = 1 ]; then
    ARGS=(--sizes 1000,10000 --runs 2 --rescan 6 --watch-idle 2 "${ARGS[@]}")
    TSV=${TSV:-$RESULTS/scale.tsv}
    PNG=${PNG:-$RESULTS/scale.png}
fi
TSV=${TSV:-$ROOT/docs/scale.tsv}
PNG=${PNG:-$ROOT/docs/scale.png}

for tool in python3 rsync; do
    command -v "$tool" >/dev/null || { echo "bench_scale.sh: $tool is not installed" >&2; exit 1; }
done
if [ ! -x /usr/bin/time ]; then
    echo "bench_scale.sh: /usr/bin/time is missing (apt-get install time)" >&2
    exit 1
fi
command -v gnuplot >/dev/null ||
    echo "bench_scale.sh: gnuplot is missing (apt-get install gnuplot-nox): the plot will be skipped"

if [[ " ${ARGS[*]} " != *" --report-only "* ]]; then
    if [ -z "$BIN" ]; then
        echo "== building (cargo build --release)"
        (cd "$ROOT" && cargo build --release --quiet)
        BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/datasafe"
    fi
    [ -x "$BIN" ] || { echo "bench_scale.sh: no binary at $BIN" >&2; exit 1; }
    BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
    echo "== machine"
    echo "cpu:      $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores)," \
         "$(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo)"
    echo "kernel:   $(uname -r); $(rsync --version | head -1 | awk '{print "rsync " $3}')"
    echo "datasafe: $BIN ($(git -C "$(dirname "$BIN")" describe --always --dirty 2>/dev/null || echo '?'))"
    echo "inotify:  max_user_watches=$(cat /proc/sys/fs/inotify/max_user_watches)"
    echo "load:     $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "results:  $TSV, $PNG; logs in $RESULTS"
fi
python3 "$ROOT/scripts/bench_scale.py" --bin "$BIN" --tsv "$TSV" --png "$PNG" \
    --results "$RESULTS" "${ARGS[@]}"
