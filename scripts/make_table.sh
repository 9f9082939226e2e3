#!/usr/bin/env bash
# Regenerate results/table.csv, the empirical table of every committed result document
# under results/ (run directories and submissions), one row per cell.
set -euo pipefail
cd "$(dirname "$0")/.."
bench table results/ --out results/table.csv
echo "wrote results/table.csv ($(($(wc -l < results/table.csv) - 1)) rows)"
