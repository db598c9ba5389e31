#!/usr/bin/env bash
# Set up .venv and run the whole test suite (unit + integration), then ruff and mypy.
# Usage: scripts/test.sh [PYTEST ARGS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
echo "==> ruff"
.venv/bin/ruff check cortex_ray tests benchmarks deployments
echo "==> mypy"
.venv/bin/mypy
echo "==> pytest"
.venv/bin/python -m pytest "$@"
