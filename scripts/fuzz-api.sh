#!/usr/bin/env bash
# Fuzzes a real `log-analyzer run` from its own OpenAPI document (GET /openapi.json) with
# schemathesis (one worker: Python 3.11's ast.parse, which hypothesis calls, is not thread-safe): no 5xx (but a forced source's documented 503), no dropped connection, every error
# answer JSON {error, message}, every answer in the documented shape. Needs the stack running
# (scripts/stack.sh up) and the debug binary (cargo build). Bounded: FUZZ_MAX_EXAMPLES per operation
# (default 150) and FUZZ_MAX_SECONDS in all (default 150; the fuzzing phase repeats until it is spent). Prints how many requests it sent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
VENV="${FUZZ_VENV:-$HOME/.cache/log-analyzer/venv}"
MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-150}"
MAX_SECONDS="${FUZZ_MAX_SECONDS:-150}"
BIN="$ROOT/target/debug/log-analyzer"

log() { echo "fuzz-api: $*" >&2; }
die() { log "$*"; exit 1; }

[ -x "$BIN" ] || die "no $BIN: run cargo build first"
# The venv lives outside the checkout so CI runs reuse it; the 4.x CLI is what this script speaks.
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q 'version 4\.'; then
  log "installing schemathesis 4.x into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
fi
log "$("$VENV/bin/schemathesis" --version)"

set -a
eval "$(scripts/stack.sh env)"
set +a
ADMIN_URL="$DATABASE_URL"
RUN_ID="$(date +%s)_$$"
DB="la_fuzz_$RUN_ID"
WORK="$(mktemp -d)"
RUN_PID=
cleanup() {
  if [ -n "$RUN_PID" ]; then
    kill -TERM "$RUN_PID" 2>/dev/null || true
    wait "$RUN_PID" 2>/dev/null || true
  fi
  psql -X -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

psql -X -q "$ADMIN_URL" -c "CREATE DATABASE $DB"
export DATABASE_URL="${ADMIN_URL%/*}/$DB"
export KAFKA_TOPIC="fuzz_$RUN_ID" KAFKA_GROUP="fuzz_$RUN_ID" KAFKA_PARTITIONS=2 REDIS_PREFIX="fuzz_$RUN_ID"
export LOG_FORMAT=json LOG_LEVEL=warn
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
ADMIN_ADDR="127.0.0.1:$(free_port)" "$BIN" migrate >/dev/null
HTTP_ADDR="127.0.0.1:$PORT" ADMIN_ADDR="127.0.0.1:$(free_port)" "$BIN" run --generate 200 2>"$WORK/run.log" &
RUN_PID=$!
URL="http://127.0.0.1:$PORT"
deadline=$((SECONDS + 120))
until curl -fs "$URL/readyz" 2>/dev/null | grep -q '"memory":"ready"'; do
  kill -0 "$RUN_PID" 2>/dev/null || { tail -n 20 "$WORK/run.log" >&2; die "run exited before it was ready"; }
  [ "$SECONDS" -lt "$deadline" ] || { tail -n 20 "$WORK/run.log" >&2; die "run not ready after 120 s"; }
  sleep 0.2
done

log "fuzzing $URL/openapi.json (≤ $MAX_EXAMPLES examples per operation, ≤ $MAX_SECONDS s)"
status=0
# From the scratch directory: schemathesis keeps its crash cache (.schemathesis/) in the working directory.
(cd "$WORK" && SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$ROOT/scripts/fuzz" "$VENV/bin/schemathesis" run "$URL/openapi.json" \
  --checks status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$MAX_EXAMPLES" --max-time "$MAX_SECONDS" --request-timeout 10 --workers 1 \
  --seed "${FUZZ_SEED:-1}" --no-color --suppress-health-check all --generation-database none \
  --report har --report-har-path "$WORK/requests.har") || status=$?

requests=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["log"]["entries"]))' "$WORK/requests.har" 2>/dev/null || echo "?")
# 5xx by status and error code (the hooks allow only 503 source_unavailable with source= forced).
server_errors=$(python3 -c '
import collections, json, sys
entries = json.load(open(sys.argv[1]))["log"]["entries"]
seen = collections.Counter()
for e in entries:
    status = e["response"]["status"]
    if status >= 500:
        try:
            code = json.loads(e["response"]["content"].get("text") or "{}").get("error")
        except ValueError:
            code = "not-json"
        seen[f"{status} {code}"] += 1
print(", ".join(f"{k}: {v}" for k, v in sorted(seen.items())) or "none")' "$WORK/requests.har" 2>/dev/null || echo "?")
if ! kill -0 "$RUN_PID" 2>/dev/null; then
  tail -n 20 "$WORK/run.log" >&2
  die "the server died during the run"
fi
if grep -q '"msg":"panic"\|handler panicked' "$WORK/run.log"; then
  grep '"msg":"panic"\|handler panicked' "$WORK/run.log" | head -5 >&2
  status=1
fi
log "requests generated: $requests (5xx: $server_errors)"
[ "$status" -eq 0 ] || die "schemathesis found failures (exit $status)"
log "passed"
