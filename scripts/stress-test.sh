#!/usr/bin/env bash
# Runs the test suite (`cargo test --all-targets`, as scripts/test.sh does) while two busy loops
# hold both cores of a 2-core CI machine: the suite must pass on a machine that is busy with
# something else. Extra arguments go to `cargo test`. The loops are stopped by PID on exit; the
# exit status is cargo's.
#
# The test binaries are built first, before the loops start: the subject is the tests, not the
# compiler.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --all-targets --no-run "$@"

loops=()
stop_loops() {
  if ((${#loops[@]})); then
    kill "${loops[@]}" 2>/dev/null || true
    wait "${loops[@]}" 2>/dev/null || true
  fi
}
trap stop_loops EXIT
for _ in 1 2; do
  (while :; do :; done) &
  loops+=("$!")
done
echo "stress-test.sh: busy loops ${loops[*]} hold the cores" >&2

started=$SECONDS
status=0
cargo test --all-targets "$@" || status=$?
echo "stress-test.sh: cargo test exited $status after $((SECONDS - started)) s under load" >&2
exit "$status"
