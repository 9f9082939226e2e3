#!/usr/bin/env bash
# Device check for one GPU: the proof that the GPU path works, under 540 s on one H200 by
# construction (every step runs under its own `timeout`; the timeouts plus their kill
# grace sum to less than 540 s, checked before anything runs).
#
# Steps: preflight (python, torch, CUDA, imports, a torch.compile smoke test), bench
# probe, bench measure, llama-3.1-8b bf16 512 in / 256 out at batch 1 and 64 eager, at
# batch 64 compiled, the first-token mark with and without a device sync, a one-page
# summary (graph captures inside windows, peak memory, roofline fraction).
#
# Usage: scripts/device_check.sh [--dry-run] [OUT_DIR]
#   OUT_DIR defaults to results/device-checks/<UTC date>-<gpu name>/.
#   --dry-run: the same steps on the CPU (tiny-llama, short lengths, whatever NVML is
#   loaded, e.g. the tests' stand-in); the tests run it.
# Environment: PYTHON (default python3).
# Reads only: never changes clocks, power limits or any other GPU setting.
set -uo pipefail
cd "$(dirname "$0")/.."

dry=0
if [ "${1:-}" = "--dry-run" ]; then dry=1; shift; fi
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1

# name:timeout_s of each step, in order. Budget: sum + KILL_S per step < 540.
STEPS="preflight:40 probe:30 measure:35 eager:130 compiled:195 marks:50 summary:15"
KILL_S=5
BUDGET_S=540
total=0
for s in $STEPS; do total=$((total + ${s#*:} + KILL_S)); done
if [ "$total" -ge "$BUDGET_S" ]; then
    echo "device check: steps need up to ${total} s, over the ${BUDGET_S} s budget" >&2
    exit 2
fi
limit() { for s in $STEPS; do [ "${s%%:*}" = "$1" ] && echo "${s#*:}"; done; }

if [ "$dry" = 1 ]; then
    gpu_slug="dry-run-cpu"
    export JOULEBENCH_MODEL_DEVICE=cpu  # the model on the CPU, energy from NVML's view
    MODEL=tiny-llama DTYPE=fp32 IN=8 OUT=4 WIN=0.2 IDLE=0.2 BIG=2
else
    gpu_name="$(nvidia-smi --query-gpu=name --format=csv,noheader -i 0 2>/dev/null | head -1)"
    gpu_slug="$(printf '%s' "${gpu_name:-unknown-gpu}" | tr -cs 'A-Za-z0-9' '-' \
        | sed 's/^-*//;s/-*$//' | tr 'A-Z' 'a-z')"
    MODEL=llama-3.1-8b DTYPE=bf16 IN=512 OUT=256 WIN=5 IDLE=2 BIG=64
fi
out="${1:-results/device-checks/$(date -u +%Y%m%d)-${gpu_slug}}"
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
printf 'step\ttimeout_s\trc\twall_s\n' > "$out/steps.tsv"

# One step: its own timeout (SIGTERM, then SIGKILL after KILL_S), output to the log.
step() {
    local name="$1"; shift
    local t0=$SECONDS rc
    echo "== $name (timeout $(limit "$name") s)" | tee -a "$log"
    timeout --kill-after="$KILL_S" "$(limit "$name")" "$@" >> "$log" 2>&1
    rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$(limit "$name")" "$rc" "$((SECONDS - t0))" \
        >> "$out/steps.tsv"
    echo "   rc=$rc in $((SECONDS - t0)) s" | tee -a "$log"
    return 0
}

preflight() {
    [ "$dry" = 1 ] || nvidia-smi
    if ! "$PY" -c "import bench" 2>/dev/null; then  # a bare machine: install this checkout
        "$PY" -m pip install -q --no-deps --no-build-isolation -e . || return 1
    fi
    "$PY" - "$dry" <<'EOF'
import sys, platform, importlib, time
dry = sys.argv[1] == "1"
print("python", platform.python_version())
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
for m in ("bench", "transformers", "numba", "pynvml", "numpy"):
    mod = importlib.import_module(m)
    print(m, getattr(mod, "__version__", "?"))
dev = "cpu" if dry else "cuda"
t = time.monotonic()
f = torch.compile(lambda x: torch.nn.functional.silu(x) * 2,
                  backend="eager" if dry else "inductor")
x = torch.randn(1024, device=dev)
assert torch.allclose(f(x), torch.nn.functional.silu(x) * 2)
print(f"compile smoke test ok in {time.monotonic() - t:.1f} s")
EOF
}

measure_load() {  # 10 s of bf16 matmuls on the GPU (1 s of small fp32 ones in a dry run)
    "$PY" -c "
import time, torch, sys
gpu = sys.argv[1] != '1'
n = 8192 if gpu else 256
a = torch.randn(n, n, device='cuda' if gpu else 'cpu',
                dtype=torch.bfloat16 if gpu else torch.float32)
end = time.monotonic() + (10 if gpu else 1)
k = 0
while time.monotonic() < end:
    a @ a; k += 1
if gpu: torch.cuda.synchronize()
print('matmuls', k)" "$dry"
}

marks() {
    "$PY" - "$MODEL" "$DTYPE" "$BIG" "$IN" "$dry" "$out/marks.json" <<'EOF'
import json, os, sys, statistics
from bench import models
from bench.workload import HfWorkload, Shape
model, dtype, batch, n_in, dry, path = sys.argv[1:]
dev = os.environ.get("JOULEBENCH_MODEL_DEVICE") or "cuda:0"
wl = HfWorkload(models.get(model), dtype, dev, compile=False)
wl.prepare()
shape = Shape(int(batch), int(n_in), 4)
wl.warm_up(shape, 1)
rows = [wl.first_token_marks(shape) for _ in range(3)]
ttft = lambda r: (r.first_token_ns - r.start_ns) * 1e-9
out = {"batch": int(batch), "input_len": int(n_in),
       "ttft_unsynced_s": statistics.median(ttft(a) for a, _ in rows),
       "ttft_synced_s": statistics.median(ttft(b) for _, b in rows)}
json.dump(out, open(path, "w"), indent=1)
print(out)
EOF
}

summary() {
    "$PY" - "$out" "$dry" <<'EOF'
import json, sys
from pathlib import Path
out, dry = Path(sys.argv[1]), sys.argv[2] == "1"
lines = [f"# Device check {out.name}", ""]
pre = (out / "log.txt").read_text(errors="replace").splitlines()
for key in ("python ", "torch ", "compile smoke"):
    lines += [f"- {l}" for l in pre if l.startswith(key)][:1]
lines += ["", "| step | timeout s | rc | wall s |", "|---|---|---|---|"]
for row in (out / "steps.tsv").read_text().splitlines()[1:]:
    lines.append("| " + " | ".join(row.split("\t")) + " |")
lines += ["", "| run | batch | mode | out tok/s | out tok/J | mean W | roofline | "
          "captures in windows | peak GB | cache len | attention |", "|" + "---|" * 11]
problems = []
for run in ("run-eager", "run-compiled"):
    p = out / run / "result.json"
    if not p.exists():
        problems.append(f"{run}: no result.json")
        continue
    for c in json.loads(p.read_text())["cells"]:
        f, e, r = c.get("figures") or {}, c.get("engine") or {}, c.get("roofline") or {}
        peak = e.get("peak_memory_bytes")
        fmt = lambda v, s="{:.3g}": s.format(v) if isinstance(v, (int, float)) else "—"
        lines.append(f"| {run} | {c['batch_size']} | {e.get('mode', c['status'])} | "
                     f"{fmt(f.get('output_tokens_per_s'))} | {fmt(f.get('output_tokens_per_j'))} | "
                     f"{fmt(f.get('mean_power_w'))} | {fmt(r.get('fraction'))} | "
                     f"{e.get('graph_captures_in_windows', '—')} | "
                     f"{fmt(peak / 1e9 if peak else None)} | {e.get('cache_len') or '—'} | "
                     f"{e.get('attention', '—')} ({e.get('attention_span', '—')}) |")
        if c["status"] != "ok":
            problems.append(f"{c['cell_id']}: {c['status']} ({c.get('error')})")
        if e.get("graph_captures_in_windows"):
            problems.append(f"{c['cell_id']}: CUDA graphs recorded inside measured windows")
        if e.get("graphs_compiled_in_windows"):
            problems.append(f"{c['cell_id']}: graphs compiled inside measured windows")
        if run == "run-compiled" and e.get("cuda_graphs") is False and not dry:
            problems.append(f"{c['cell_id']}: not compiled ({e.get('compile_error')})")
m = out / "marks.json"
if m.exists():
    d = json.loads(m.read_text())
    lines += ["", f"First-token mark at batch {d['batch']}, {d['input_len']} in: unsynced "
              f"{d['ttft_unsynced_s'] * 1e3:.1f} ms, synced {d['ttft_synced_s'] * 1e3:.1f} ms"]
lines += ["", "Problems: " + ("; ".join(problems) if problems else "none")]
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
}

# timeout runs programs, not shell functions: the steps written as functions run in a
# child bash that inherits them and the settings they read.
export dry PY out MODEL DTYPE IN OUT BIG
export -f preflight measure_load marks summary
B=("$PY" -m bench)
step preflight bash -c preflight
step probe "${B[@]}" probe --gpu 0 --duration-s 1 --json
step measure "${B[@]}" measure --gpu 0 --json -- bash -c measure_load
step eager "${B[@]}" run --gpu 0 --model "$MODEL" --dtype "$DTYPE" --batch "1,$BIG" \
    --input-len "$IN" --output-len "$OUT" --min-window-s "$WIN" --repeats 2 --idle-s "$IDLE" \
    --no-compile --no-phases --json --quiet --out "$out/run-eager"
step compiled "${B[@]}" run --gpu 0 --model "$MODEL" --dtype "$DTYPE" --batch "$BIG" \
    --input-len "$IN" --output-len "$OUT" --min-window-s "$WIN" --repeats 2 --idle-s "$IDLE" \
    --no-phases --json --quiet --out "$out/run-compiled"
step marks bash -c marks
step summary bash -c summary
echo "device check written to $out"
