#!/usr/bin/env bash
# Fuzz the live API against its own /openapi.json with schemathesis (authenticated, loopback only).
#
#   scripts/schemathesis.sh [extra schemathesis args...]
#
# Starts the API alone (no worker: submitted jobs just stay queued) on 127.0.0.1 with SQLite, the filesystem
# broker and local storage in a temporary directory, runs schemathesis bounded in time, stops the server and
# exits with schemathesis' status (non-zero when it found failures).
# Env: PORT (default 8765), MAX_EXAMPLES (30), MAX_TIME (540 s: the whole schemathesis run is killed after it).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-$PWD/.venv/bin/python}
ST=${ST:-$PWD/.venv/bin/schemathesis}
PORT=${PORT:-8765}
MAX_EXAMPLES=${MAX_EXAMPLES:-30}
MAX_TIME=${MAX_TIME:-540}
KEY="st-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

TMP=$(mktemp -d)
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

PRUNEKIT_API_KEYS="alice:$KEY" \
PRUNEKIT_AUTH_DISABLED=false \
PRUNEKIT_DATABASE_URL="sqlite:///$TMP/prunekit.db" \
PRUNEKIT_BROKER_URL="filesystem://" \
PRUNEKIT_BROKER_DIR="$TMP/broker" \
PRUNEKIT_STORAGE_BACKEND=local \
PRUNEKIT_STORAGE_DIR="$TMP/storage" \
PRUNEKIT_LOG_LEVEL=WARNING \
  "$PY" -m uvicorn service.main:app_factory --factory --host 127.0.0.1 --port "$PORT" --log-level warning \
  >"$TMP/server.log" 2>&1 &
SERVER_PID=$!

for _ in $(seq 1 100); do
  if "$PY" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$PORT/livez', timeout=1)" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "the API did not start:" >&2
    cat "$TMP/server.log" >&2
    exit 2
  fi
  sleep 0.2
done

rc=0
# From the temp dir, so schemathesis' own state (.schemathesis/) does not land in the checkout.
(cd "$TMP" && timeout --kill-after=30 "$MAX_TIME" \
  "$ST" run "http://127.0.0.1:$PORT/openapi.json" \
  -H "Authorization: Bearer $KEY" \
  --checks all \
  --max-examples "$MAX_EXAMPLES" \
  --request-timeout 30 \
  --workers 1 \
  --seed "${SEED:-1}" \
  --generation-database none \
  --no-color \
  "$@") || rc=$?

if grep -q "Traceback" "$TMP/server.log"; then
  echo "--- server log (tracebacks) ---"
  grep -B2 -A30 "Traceback" "$TMP/server.log" | head -200
fi
exit "$rc"
