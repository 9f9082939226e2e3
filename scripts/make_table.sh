#!/usr/bin/env bash
# Regenerate results/table.csv, the empirical table of every committed result document
# under results/ (run directories and submissions), one row per cell; the ML.ENERGY
# reference rows stay in results/reference/ (bench table adds them unless --no-reference).
set -euo pipefail
cd "$(dirname "$0")/.."
bench table results/ --no-reference --out results/table.csv  # our own runs only
echo "wrote results/table.csv ($(($(wc -l < results/table.csv) - 1)) rows)"
