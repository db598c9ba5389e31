#!/usr/bin/env bash
# Create (or refresh) the virtual environment at .venv/ with cortex-ray and its extras.
# Usage: scripts/setup.sh [EXTRAS]   e.g. scripts/setup.sh test,onnx
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    "$python" -m venv .venv
fi
stamp=".venv/.cortex-ray-installed"
want="$(cat pyproject.toml | sha256sum | cut -c1-16)-$extras"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> installing cortex-ray[$extras] into .venv (first run takes a few minutes)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[$extras]"
    echo "$want" > "$stamp"
fi
