#!/usr/bin/env bash
# Sparse files (issue 16), side by side in one run: the first mirror of one file of
# 2 GiB holding 1 MiB of random data at offset 100 MiB (the rest a hole), into a fresh
# DST, on disk and on tmpfs:
#
#   datasafe sync SRC DST          this build (reads the data only, leaves holes)
#   base sync SRC DST              datasafe before issue 16 (6e1aa5b: reads and writes
#                                  2 GiB of zeros)
#   rsync -aS SRC/ DST/            rsync with --sparse
#   rsync -aHSXA SRC/ DST/         what issue 16 compares with
#
# Timings by hyperfine (median and mean of N runs after a warm-up; DST removed and the
# filesystem synced before each run). datasafe syncs the filesystem before it records
# the index; rsync does not, so "rsync -aS + sync" adds `sync -f DST` for like-for-like
# durability. Then each command runs once more and `du` shows what DST allocates, and
# the ratios (datasafe / each other) are printed.
#
# usage: scripts/bench_sparse.sh [--runs N] [--keep]
#   --runs N   timed runs per command (default 5; the base on disk gets 3: it writes 2 GiB)
# Environment:
#   DATASAFE_BASE  a datasafe binary from before issue 16 (default: built from 6e1aa5b
#                  into target/bench-base/, which takes a few minutes once)
#   BENCH_DISK     a folder on disk (default /var/tmp); BENCH_TMPFS one on tmpfs
#                  (default /dev/shm)
# Needs: cargo, git, hyperfine (apt-get install hyperfine), rsync, python3.
set -euo pipefail

RUNS=5
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for tool in cargo git hyperfine rsync python3; do
    command -v "$tool" >/dev/null || {
        echo "bench_sparse.sh: $tool is not installed (apt-get install -y $tool)" >&2
        exit 1
    }
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BASE_COMMIT=6e1aa5b
if [ -z "${DATASAFE_BASE:-}" ]; then
    DATASAFE_BASE="$ROOT/target/bench-base/datasafe-$BASE_COMMIT"
    if [ ! -x "$DATASAFE_BASE" ]; then
        echo "== building the base ($BASE_COMMIT) into target/bench-base/"
        src="$ROOT/target/bench-base/src"
        rm -rf "$src" && mkdir -p "$src"
        git archive "$BASE_COMMIT" | tar -x -C "$src"
        # Its own target folder: the base binary must not take this build's place.
        cargo build --release --quiet --manifest-path "$src/Cargo.toml" \
            --target-dir "$ROOT/target/bench-base/target"
        cp "$ROOT/target/bench-base/target/release/datasafe" "$DATASAFE_BASE"
    fi
fi
echo "== building (cargo build --release)"
cargo build --release --quiet
NEW="$ROOT/target/release/datasafe"
echo "datasafe: $NEW ($(git rev-parse --short HEAD)); base: $DATASAFE_BASE"

results=()
cleanup() {
    [ "$KEEP" = 1 ] && return
    for d in "${work_dirs[@]:-}"; do [ -n "$d" ] && rm -rf "$d"; done
}
work_dirs=()
trap cleanup EXIT

bench_in() {
    local label="$1" where="$2"
    local work
    work=$(mktemp -d "$where/bench-sparse.XXXXXX")
    work_dirs+=("$work")
    mkdir -p "$work/src"
    truncate -s 2G "$work/src/big"
    head -c 1M /dev/urandom | dd of="$work/src/big" bs=1M seek=100 conv=notrunc status=none
    local dst="$work/dst"
    echo
    echo "== $label ($where, $(df -T "$where" | awk 'NR==2 {print $2}')): source allocates $(du -k "$work/src/big" | cut -f1) KiB of $(stat -c %s "$work/src/big") bytes"
    local json="$work/hyperfine.json" base_json="$work/hyperfine-base.json"
    local base_runs=$RUNS
    [ "$label" = disk ] && [ "$RUNS" -gt 3 ] && base_runs=3
    hyperfine --style basic --warmup 1 --runs "$RUNS" --export-json "$json" \
        --prepare "rm -rf '$dst'; sync" \
        -n datasafe "'$NEW' sync '$work/src' '$dst'" \
        -n "rsync -aS" "rsync -aS '$work/src/' '$dst/'" \
        -n "rsync -aS + sync" "rsync -aS '$work/src/' '$dst/' && sync -f '$dst'" \
        -n "rsync -aHSXA" "rsync -aHSXA '$work/src/' '$dst/'"
    hyperfine --style basic --runs "$base_runs" --export-json "$base_json" \
        --prepare "rm -rf '$dst'; sync" \
        -n base "'$DATASAFE_BASE' sync '$work/src' '$dst'"
    echo "-- what DST allocates after one more run of each"
    for cmd in "$NEW sync $work/src $dst" "rsync -aS $work/src/ $dst/" "$DATASAFE_BASE sync $work/src $dst"; do
        rm -rf "$dst"
        $cmd >/dev/null
        cmp "$work/src/big" "$dst/big" || { echo "bench_sparse.sh: $cmd copied other bytes" >&2; exit 1; }
        printf '  %8s KiB  %s\n' "$(du -k "$dst/big" | cut -f1)" "${cmd%% *}"
    done
    rm -rf "$dst"
    results+=("$label:$json:$base_json")
}

bench_in disk "${BENCH_DISK:-/var/tmp}"
bench_in tmpfs "${BENCH_TMPFS:-/dev/shm}"

echo
echo "== ratios (datasafe's median / the other's; < 1 is faster)"
for r in "${results[@]}"; do
    IFS=: read -r label json base_json <<<"$r"
    python3 - "$label" "$json" "$base_json" <<'EOF'
import json, sys
label, runs = sys.argv[1], {}
for path in sys.argv[2:]:
    for r in json.load(open(path))["results"]:
        runs[r["command"]] = r
new = runs["datasafe"]["median"]
line = [f"{label:6} datasafe {new:.3f} s (user {runs['datasafe']['user']:.2f} s)"]
for other in ["base", "rsync -aS", "rsync -aS + sync", "rsync -aHSXA"]:
    line.append(f"vs {other} {runs[other]['median']:.3f} s: {new / runs[other]['median']:.2f}x")
print("; ".join(line))
EOF
done
