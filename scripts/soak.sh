#!/usr/bin/env bash
# Soak test of `datasafe watch`: a 20k-file tree (scripts/mktree.py) churned at random for
# a given time while the watcher mirrors it, then two questions:
#   1. Does DST mirror SRC once the churn stops? Waits (up to --settle seconds) until type,
#      size, mode, mtime (ns), link target and content match for every path, then
#      `datasafe verify DST --source SRC` must exit 0.
#   2. Did memory stay flat? VmRSS sampled every 5 s; "start" is when the start-up
#      reconcile is done and the churn begins, "end" once DST mirrors SRC. Flat means
#      end <= start * 1.5 + 8 MiB. Start, peak and end are printed.
# Churn: create / modify / same-size rewrite / append / delete / rename / mkdir / rmdir,
# ~300 ops/s (--rate). The watcher runs as `datasafe watch SRC DST --debounce 200ms` with
# XDG_STATE_HOME and XDG_CONFIG_HOME inside the temp dir. Prints PASS or FAIL (exit 1).
#
# usage: scripts/soak.sh [--minutes N] [--files N] [--rate OPS] [--settle SECONDS] [--keep]
#   --minutes N   how long to churn (default 30)
#   --files N     size of the tree (default 20000)
#   --rate OPS    churn operations per second (default 300)
#   --settle S    how long DST may take to catch up after the churn (default 300)
#   --keep        keep the temp dir (printed) for poking at afterwards
set -euo pipefail

minutes=30 files=20000 rate=300 settle=300 keep=0
while [ $# -gt 0 ]; do
    case $1 in
        --minutes) minutes=$2; shift 2 ;;
        --files) files=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --settle) settle=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
nice -n 19 cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/datasafe
BIN=$(realpath "$BIN")

TMP=$(mktemp -d "${TMPDIR:-/tmp}/datasafe-soak.XXXXXX")
cleanup() { [ "$keep" = 1 ] && echo "kept $TMP" || rm -rf "$TMP"; }
trap cleanup EXIT

echo "datasafe soak: $files files, $minutes min churn at ~$rate ops/s, debounce 200ms"
echo "PASS needs DST == SRC after the churn, verify --source exit 0, and flat RSS (end <= start x 1.5 + 8 MiB)"
python3 scripts/mktree.py "$TMP/src" --files "$files" --size-kib 4
python3 scripts/soak.py --bin "$BIN" --src "$TMP/src" --dst "$TMP/dst" --tmp "$TMP" \
    --minutes "$minutes" --rate "$rate" --settle "$settle" --debounce 200ms
