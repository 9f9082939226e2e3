#!/usr/bin/env bash
# Mutation testing of the code that derives figures: prints the score and each survivor.
#
#   scripts/mutation.sh           every group below (kernels too: long)
#   scripts/mutation.sh --quick   figure derivation and econ formulas (a few minutes; CI)
#
# Mutants run with NUMBA_DISABLE_JIT=1 (a mutated kernel runs as plain Python at once).
# Survivors judged equivalent are listed, with why, in scripts/mutation-equivalent.txt.
set -euo pipefail

# Modules (path[:function,...]) and the tests that must kill their mutants.
FIGURES="bench/results/figures.py:repeat_figures,cell_figures,_edge_bound_rel,_sure_bound_j,_window_bound_rel,phases,weakest_method,idle_power_w,run_summary"
FIGURE_TESTS="tests/test_figures_known_answer.py"
THERMAL="bench/results/thermal.py bench/results/figures.py:flag_throttled,throttled_windows"
THERMAL_TESTS="tests/test_thermal_reasons.py tests/test_thermal.py::test_flag_and_count_worked_by_hand"
ECON="bench/econ/formulas.py"
ECON_TESTS="tests/test_econ.py tests/test_econ_known_answer.py"
OPTIMIZE="bench/econ/optimize.py:margin_rmb_per_gpu_hour,_best,operating_points"
OPTIMIZE_TESTS="tests/test_econ_optimize.py"
STATS="kernels/stats.py"
STATS_TESTS="tests/test_stats.py"
TRACE="kernels/trace.py"
TRACE_TESTS="tests/kernels/test_refresh_grid.py tests/kernels/test_trace.py tests/kernels/test_edge_bounds.py"

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
export NUMBA_DISABLE_JIT=1
groups=(--group "$FIGURES|$FIGURE_TESTS" --group "$THERMAL|$THERMAL_TESTS"
        --group "$ECON|$ECON_TESTS" --group "$OPTIMIZE|$OPTIMIZE_TESTS")
if [[ "${1:-}" != "--quick" ]]; then
    groups+=(--group "$STATS|$STATS_TESTS" --group "$TRACE|$TRACE_TESTS")
fi
exec "$PYTHON" scripts/mutate.py --equivalent scripts/mutation-equivalent.txt "${groups[@]}"
