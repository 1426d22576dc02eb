#!/usr/bin/env bash
# Side-by-side benchmark of the source walk (issue 15): datasafe's walk_source_parallel and
# walk_source against jwalk (sorted, parallel), the ignore crate's parallel walker (filters
# off, unsorted) and walkdir (sorted, one thread), all doing one lstat per entry and one
# readlink per symlink, consumed on one thread. The walkers are interleaved round by round;
# the table gives medians and the ratio ours / each (see benches/walk.rs).
#
# Trees come from scripts/mktree.py (small files: --size-kib 0.5, the walk reads no
# content), plus one symlink in every tenth folder so readlink is exercised. They are made
# on tmpfs (/dev/shm) and on the disk (/var/tmp); the disk tree is walked with a warm page
# and dentry cache (the first, unmeasured run of each walker warms it): cold-cache figures
# would need `echo 3 > /proc/sys/vm/drop_caches`, which disturbs everyone on the machine.
#
# usage: scripts/bench_walk.sh [--files N] [--size-kib K] [--rounds R] [--places "DIR..."] [--keep]
#   --files N      files per tree (default 100000)
#   --size-kib K   mean file size for mktree.py (default 0.5; 0.001 makes nearly all files
#                  empty, which keeps a 1M-file tmpfs tree to its inodes, ~1 GB less RAM)
#   --rounds R     interleaved rounds (default 11)
#   --places DIRS  where to make the trees (default "/dev/shm /var/tmp")
#   --keep         keep the trees (reused by the next run with the same --files)
set -euo pipefail
cd "$(dirname "$0")/.."

files=100000 size=0.5 rounds=11 places="/dev/shm /var/tmp" keep=0
while [ $# -gt 0 ]; do
    case $1 in
        --files) files=$2; shift 2 ;;
        --size-kib) size=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --places) places=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

trees=()
made=()
for place in $places; do
    tree=$place/datasafe-walkbench-$files
    if [ ! -d "$tree" ]; then
        python3 scripts/mktree.py "$tree" --files "$files" --size-kib "$size"
        find "$tree" -mindepth 1 -type d | sort | awk 'NR % 10 == 0' |
            while read -r d; do ln -s ../somewhere/else "$d/link"; done
        made+=("$tree")
    fi
    trees+=("$tree")
done
cleanup() { [ "$keep" = 1 ] || rm -rf "${made[@]}"; }
trap cleanup EXIT

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench --bench walk -- --rounds "$rounds" "${trees[@]}"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
