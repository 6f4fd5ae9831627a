#!/usr/bin/env bash
# Lint, format, type and import-contract checks (run by .ci/run before the tests). Needs .venv (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy prunekit jobstore service worker
OMP_NUM_THREADS=1 .venv/bin/python -m pytest -p no:cacheprovider -q tests/contracts
