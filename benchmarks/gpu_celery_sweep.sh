#!/usr/bin/env bash
# GPU check through the real service: the API (uvicorn) and two Celery worker processes on the `gpu` queue
# (concurrency 1 each), kombu's filesystem transport, SQLite, local storage. A sweep job with `device: cuda` is
# submitted over HTTP with the client and waited for; then a compress job. Timings and the per-trial worker
# assignment go to OUT.
#
# Usage, on a machine with a GPU, from the repository root:
#   bash benchmarks/gpu_celery_sweep.sh IN OUT
# IN holds cnn.safetensors (a `prunekit/digits_cnn` state-dict) and digits.npz, e.g. written by
#   python benchmarks/gpu_celery_inputs.py IN
# Without celery/fastapi, wheels in .whl/ are installed offline first (the device machine has torch but no server stack).
set -euo pipefail
IN=$(cd "$1" && pwd)
OUT=$(mkdir -p "$2" && cd "$2" && pwd)
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu tries the script on a machine without a GPU
if ! "$PY" -c "import celery, fastapi, torch_pruning" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --find-links .whl pydantic pyyaml httpx typer rich fastapi uvicorn \
    python-multipart pydantic-settings sqlalchemy alembic prometheus-client celery safetensors torch-pruning
fi
export PYTHONPATH=$PWD
RUN=$(mktemp -d)
export PRUNEKIT_DATABASE_URL="sqlite:///$RUN/prunekit.db" PRUNEKIT_BROKER_DIR="$RUN/broker"
export PRUNEKIT_STORAGE_DIR="$RUN/storage" PRUNEKIT_WORK_DIR="$RUN/work" PRUNEKIT_API_KEYS="gpu:gpu-secret-key"
export PRUNEKIT_SERVER=http://127.0.0.1:8799 PRUNEKIT_API_KEY=gpu-secret-key PRUNEKIT_DEFAULT_QUEUE=gpu
mkdir -p "$RUN/work"

"$PY" -c "from jobstore.db import run_migrations; from jobstore.settings import Settings; \
run_migrations(Settings().database_url)"
export PRUNEKIT_MIGRATE_ON_START=false
pids=()
"$PY" -m uvicorn service.main:app_factory --factory --port 8799 >"$OUT/api.log" 2>&1 &
pids+=($!)
for n in 0 1; do
  CUDA_VISIBLE_DEVICES=0 "$PY" -m celery -A worker.main worker -Q gpu -c 1 -n "gpu$n@%h" --without-mingle \
    --without-gossip -l INFO >"$OUT/worker$n.log" 2>&1 &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
"$PY" - <<'EOF'
import os, time, httpx
for _ in range(60):
    try:
        if httpx.get(os.environ["PRUNEKIT_SERVER"] + "/livez", timeout=2).status_code == 200:
            break
    except httpx.HTTPError:
        pass
    time.sleep(1)
EOF
sleep 3  # the workers connect to the filesystem broker

cat >"$RUN/sweep.yaml" <<'EOF'
kind: sweep
device: DEVICE
model: {architecture: prunekit/digits_cnn}
pruning: {method: magnitude, scope: global, sparsity: 0.9}
finetune:
  epochs: 5
  batch_size: 128
  optimizer: {name: adamw, lr: 0.002}
sweep:
  sparsities: [0.5, 0.9, 0.95]
  regularizers:
    none: {}
    l1_kd: {l1: 1.0e-5, l2: 1.0e-4, distillation: {alpha: 0.5, temperature: 4.0}}
  schedules: [oneshot, gradual]
EOF
sed -i "s/^device: DEVICE/device: $DEVICE/" "$RUN/sweep.yaml"
sed -e 's/^kind: sweep/kind: compress/' -e '/^sweep:/,$d' "$RUN/sweep.yaml" >"$RUN/compress.yaml"
printf 'gates: {max_accuracy_drop: 0.02, min_sparsity: 0.89}\n' >>"$RUN/compress.yaml"

for kind in sweep compress; do
  t0=$(date +%s%N)
  set +e
  "$PY" -m prunekit.cli.main submit "$IN/cnn.safetensors" --spec "$RUN/$kind.yaml" --data "$IN/digits.npz" \
    --wait --poll-interval 0.5 --timeout 480 --out "$OUT/$kind" --json >"$OUT/$kind.json" 2>"$OUT/$kind.stderr"
  code=$?
  set -e
  t1=$(date +%s%N)
  echo "$kind: client exit $code, submit-to-done $(( (t1 - t0) / 1000000 )) ms" >>"$OUT/summary.txt"
done

"$PY" - "$RUN/prunekit.db" >>"$OUT/summary.txt" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
cols = [r[1] for r in db.execute("pragma table_info(job_trials)")]
print("job_trials columns:", cols)
for row in db.execute("select * from job_trials order by 1, 2"):
    print(dict(zip(cols, row)))
for row in db.execute("select id, kind, status, queue, attempts, started_at, finished_at from jobs"):
    print(row)
EOF
nvidia-smi --query-gpu=name,driver_version,memory.used --format=csv >>"$OUT/summary.txt" 2>&1 || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" >>"$OUT/summary.txt"
cat "$OUT/summary.txt"
