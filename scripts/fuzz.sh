#!/usr/bin/env bash
# The long fuzz run: each cargo-fuzz target in fuzz/ (config, index, version_name) for
# SECONDS (default 300) under libFuzzer with AddressSanitizer, on the nightly toolchain.
# CI runs the short version on stable instead (tests/fuzz_smoke.rs, same target bodies).
#
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Inputs libFuzzer finds interesting accumulate in fuzz/corpus/TARGET (not committed);
# the committed seeds in fuzz/seeds/TARGET are read alongside. A crash or a hang (an input
# running over 10 s) stops that target and leaves the input in fuzz/artifacts/TARGET; to
# keep it as a regression, copy it to fuzz/regressions/TARGET/ (tests/fuzz_smoke.rs runs
# every file there) and reproduce it with
#   cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-…
# Exit code: 0 if every target ran clean, 1 if any found something.
set -euo pipefail

seconds=${1:-300}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config index version_name)
cd "$(dirname "$0")/.."

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: cargo-fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz
fi

# Debug assertions on (cargo-fuzz's default), so overflow checks count as crashes too.
nice -n 19 cargo +nightly fuzz build

failed=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    echo "=== $target: ${seconds}s ==="
    # -timeout: an input that takes 10 s is a hang. -rss_limit_mb: SQLite's page cache
    # and a big config stay far below 2 GiB; above that is a leak or a runaway.
    if ! nice -n 19 cargo +nightly fuzz run "$target" \
        "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        2>&1 | tee "fuzz/$target.log" | grep -E '^(#[0-9]+ +DONE|stat::|==[0-9]+==|SUMMARY|.*panicked at|Test unit written)'; then
        :
    fi
    if grep -qE 'Test unit written|deadly signal|panicked at' "fuzz/$target.log"; then
        failed+=("$target")
        echo "=== $target: FOUND A FAILURE, see fuzz/$target.log and fuzz/artifacts/$target ==="
    else
        echo "=== $target: clean ==="
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: failures in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: every target ran ${seconds}s clean"
