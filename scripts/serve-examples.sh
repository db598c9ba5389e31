#!/usr/bin/env bash
# Set up .venv, build the example models (trained on the spot) and serve the example APIs
# on a local Ray at http://127.0.0.1:${PORT:-8000} until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
echo "==> building the example models into deployments/model-store/"
.venv/bin/python deployments/build_models.py
echo "==> serving deployments/cortex.yaml (Ctrl-C to stop)"
exec .venv/bin/cortex-ray run deployments/cortex.yaml --port "${PORT:-8000}"
