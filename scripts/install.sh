#!/usr/bin/env bash
# Create .venv and install crossmodal with its test extras.
# torch and torchvision must be a matching pair: install them together first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade "pip>=23" >/dev/null 2>&1 || true
if ! python -c "import torch, torchvision" >/dev/null 2>&1; then
  case "$(uname -m)" in
    aarch64|arm64) python -m pip install -q "torch==2.9.1" "torchvision==0.24.1" ;;
    *)             python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" ;;
  esac
fi
python -m pip install -q -e ".[test]"
touch .venv/.installed
echo "crossmodal installed in .venv"
