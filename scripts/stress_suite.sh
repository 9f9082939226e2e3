#!/usr/bin/env bash
# Run the test suite N times (default 10) beside a CPU hog, one busy process per core, to
# catch tests that fail only on a busy machine. Prints each run's outcome and
# "passed K of N"; exits 0 only if every run passed. The hog is killed at the end,
# whatever happens (Ctrl-C included).
#
#   scripts/stress_suite.sh [N] [PYTEST_ARGS...]     e.g. scripts/stress_suite.sh 3 -x -q
#
# A run is the README's test command (the suite on two workers, then tests/perf alone),
# or `python -m pytest PYTEST_ARGS` where arguments are given.
#
# PYTHON selects the interpreter (default: python, else python3), the README's `python`;
# its folder goes first on PATH, as in an activated venv. Each run's
# output is kept in $STRESS_LOG_DIR (default: a temp dir).
set -uo pipefail
cd "$(dirname "$0")/.."

n=${1:-10}
shift $(( $# > 0 ? 1 : 0 ))
if ! [[ $n =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [N] [PYTEST_ARGS...]   (N: a positive number of runs)" >&2
    exit 2
fi
py=${PYTHON:-$(command -v python || command -v python3)}
# the interpreter's folder first on PATH, as an activated venv has it: tests run `bench`
PATH="$(dirname "$py"):$PATH"
export PATH
logs=${STRESS_LOG_DIR:-$(mktemp -d -t joulebench-stress.XXXXXX)}
mkdir -p "$logs"

hogs=()
stop_hogs() {
    # only the processes this script started, by their ids
    for pid in "${hogs[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${hogs[@]}"; do
        wait "$pid" 2>/dev/null
    done
    hogs=()
}
trap stop_hogs EXIT
trap 'stop_hogs; exit 130' INT
trap 'stop_hogs; exit 143' TERM

# the cores this process may run on; not `nproc`, which gives OMP_NUM_THREADS where it is set
cores=$("$py" -c 'import os; print(len(os.sched_getaffinity(0)))' 2>/dev/null \
        || getconf _NPROCESSORS_ONLN)
for _ in $(seq "$cores"); do
    "$py" -c 'while True: pass' &
    hogs+=($!)
done
echo "CPU hog: $cores busy processes (pids ${hogs[*]}); logs in $logs"

# The README's test command, word for word after `python` (tests/test_docs.py checks it)
readme_tests() {
    "$py" -m pytest -n 2 --dist loadfile --ignore=tests/perf && "$py" -m pytest tests/perf
}

passed=0
for i in $(seq "$n"); do
    start=$(date +%s)
    if [ $# -gt 0 ]; then
        "$py" -m pytest "$@" >"$logs/run-$i.log" 2>&1
    else
        readme_tests >"$logs/run-$i.log" 2>&1
    fi
    rc=$?
    secs=$(( $(date +%s) - start ))
    # pytest's closing line of each call, e.g. "== 700 passed in 600.1s ==" (two calls
    # in the README's command)
    summary=$(grep -a -E '^=+ .* in [0-9.]+s' "$logs/run-$i.log" | tr -d '=' \
              | sed -E 's/^ +| +$//g' | paste -sd ';' -)
    [ -n "$summary" ] || summary=$(tail -n 1 "$logs/run-$i.log")
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        echo "run $i of $n: passed (${secs} s) $summary"
    else
        echo "run $i of $n: FAILED rc=$rc (${secs} s) $summary"
        grep -a -E '^(FAILED|ERROR) ' "$logs/run-$i.log" | sed 's/^/    /'
    fi
done
stop_hogs
echo "passed $passed of $n"
[ "$passed" -eq "$n" ]
