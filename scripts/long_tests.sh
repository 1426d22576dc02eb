#!/bin/sh
# The long variants of the fault tests: 100 SIGKILLed syncs instead of 10
# (tests/sync_faults.rs) and 10 SIGKILLed watchers mid-burst instead of 2
# (tests/watch_faults.rs); the other tests in those files run as usual. Tests that need
# root (tmpfs, setpriv) skip with a reason otherwise. Arguments go to cargo test, e.g.
#   scripts/long_tests.sh --release -- --nocapture
# Both files are modules of the one integration binary (tests/main.rs): the filters pick
# their tests by the module's name.
set -eu
cd "$(dirname "$0")/.."
case " $* " in
*" -- "*) set -- "$@" sync_faults:: watch_faults:: ;;
*) set -- "$@" -- sync_faults:: watch_faults:: ;;
esac
DATASAFE_LONG=1 exec cargo test --test integration "$@"
