#!/usr/bin/env bash
# Create .venv with prunekit and everything its tests need. Idempotent; torch comes from pinned wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.prunekit-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements/constraints.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch/torchvision pinned in pyproject (==) so pip never resolves another build.
  # Constraints: the versions the suite last passed with, so a new release upstream cannot break CI unseen.
  .venv/bin/python -m pip install -q -c requirements/constraints.txt -e '.[dev]'
  touch "$stamp"
fi
