#!/usr/bin/env bash
# Set up and run the whole test suite (unit, integration with real Redis/PostgreSQL/Celery/uvicorn, browser).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash scripts/setup.sh
export PYTHONUNBUFFERED=1
.venv/bin/python -m pytest -p no:cacheprovider "$@"
