#!/usr/bin/env bash
# From a fresh clone: set up, start the embedded server (API + one worker; SQLite, filesystem broker, local
# storage), train a small CNN on sklearn's digits, submit it over HTTP with the client, wait, download.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PORT=${PRUNEKIT_DEMO_PORT:-8765}
DEMO=var/demo
mkdir -p "$DEMO"
export PRUNEKIT_API_KEYS="demo:demo-secret-key"
export PRUNEKIT_SERVER="http://127.0.0.1:$PORT" PRUNEKIT_API_KEY="demo-secret-key"

.venv/bin/python -m service.embedded --port "$PORT" >"$DEMO/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
  curl -fsS "$PRUNEKIT_SERVER/livez" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { cat "$DEMO/server.log"; exit 1; }
  sleep 1
done

.venv/bin/python scripts/make_demo_inputs.py "$DEMO"
set +e
.venv/bin/prunekit submit "$DEMO/model.pt" --spec "$DEMO/spec.yaml" --data "$DEMO/digits.npz" \
  --wait --out "$DEMO/result"
code=$?
set -e
echo
echo "client exit code: $code (0 = succeeded with all gates passed, 3 = a gate was missed)"
echo "artifact and report: $(cd "$DEMO/result" 2>/dev/null && pwd)"
ls -l "$DEMO/result" 2>/dev/null || true
echo "server log: $DEMO/server.log"
exit $code
