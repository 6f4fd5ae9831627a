#!/usr/bin/env bash
# Set up and run the whole test suite (unit, integration with real Redis/PostgreSQL/Celery/uvicorn, browser).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash scripts/setup.sh
export PYTHONUNBUFFERED=1
# The suite runs several processes at once (uvicorn, Celery workers, sandboxed jobs) on 2 cores; OpenMP threads
# spinning against each other make small torch ops 100x slower, so each process gets one thread.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
.venv/bin/python -m pytest -p no:cacheprovider "$@"
