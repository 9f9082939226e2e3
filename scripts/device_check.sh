#!/usr/bin/env bash
# Device check for one GPU (under 8 minutes on one H200): what the sensors resolve
# (bench probe), a measured idle-to-load command (bench measure), then a short sweep of
# the tiny model and of the Llama-3.1-8B architecture in bf16 (input 512, output 256).
# Usage: scripts/device_check.sh [OUT_DIR]   (default results/device-checks/<UTC stamp>)
# With the device tool: scripts/device_check.sh "$OUT" -- it writes log.txt and the run
# directories run-tiny/ and run-8b/ (7 files, one folder deep: all of them come back);
# then copy them under results/device-checks/<stamp>/ and commit.
# Reads only: never changes clocks, power limits or any other GPU setting.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-results/device-checks/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ! python3 -c "import bench" 2>/dev/null; then
    python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
fi
step() { echo "== $*"; }
{
    step "nvidia-smi"; nvidia-smi || true
    step "bench list devices"; bench list devices --json
    step "bench probe"; timeout 120 bench probe --gpu 0 --json
    step "bench measure: 10 s of bf16 matmuls"
    timeout 120 bench measure --gpu 0 --json -- python3 -c "
import time, torch
a = torch.randn(8192, 8192, device='cuda', dtype=torch.bfloat16)
end = time.monotonic() + 10
n = 0
while time.monotonic() < end:
    a @ a; n += 1
torch.cuda.synchronize(); print('matmuls', n)"
    step "bench run: tiny-llama, eager"
    timeout 150 bench run --gpu 0 --model tiny-llama --batch 1,16,64 --min-window-s 2 --no-compile \
        --repeats 3 --json --out "$out/run-tiny"
    step "bench run: llama-3.1-8b bf16, static cache + torch.compile, 512 in / 256 out"
    timeout 270 bench run --gpu 0 --model llama-3.1-8b --dtype bf16 --batch 1,16,64,256 \
        --input-len 512 --output-len 256 --min-window-s 5 --repeats 3 --json \
        --out "$out/run-8b"
} 2>&1 | tee "$out/log.txt"
echo "device check written to $out"
