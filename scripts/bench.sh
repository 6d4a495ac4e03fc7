#!/usr/bin/env bash
# Benchmarks, each with its baseline measured in the same run on the same machine.
#
#   scripts/bench.sh ingest [--quick]   events/s of `log-analyzer ingest` from pre-produced events to
#                                       zero lag, vs psql COPY of the same rows into an identical table
#
# Figures are printed and appended to docs/BENCHMARKS.md (not with --quick, which only proves the
# harness works end to end with tiny sizes and a debug build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

QUICK=0
for arg in "$@"; do [ "$arg" = --quick ] && QUICK=1; done
if [ "$QUICK" = 1 ]; then
  EVENTS="${BENCH_EVENTS:-20000}"
  PROFILE=debug
else
  EVENTS="${BENCH_EVENTS:-2000000}"
  PROFILE=release
fi
PARTITIONS="${BENCH_PARTITIONS:-6}"

log() { printf 'bench: %s\n' "$*" >&2; }

setup() {
  scripts/stack.sh up
  set -a
  eval "$(scripts/stack.sh env)"
  set +a
  if [ "$PROFILE" = release ]; then
    cargo build --release --quiet
  else
    cargo build --quiet
  fi
  BIN="$ROOT/target/$PROFILE/log-analyzer"
  RUN_ID="$(date +%s)_$$"
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"; [ -n "${INGEST_PID:-}" ] && kill "$INGEST_PID" 2>/dev/null || true' EXIT
  ADMIN_URL="$DATABASE_URL"
  DB="la_bench_$RUN_ID"
  psql -X -q "$ADMIN_URL" -c "CREATE DATABASE $DB"
  export DATABASE_URL="${ADMIN_URL%/*}/$DB"
  export KAFKA_TOPIC="bench_$RUN_ID" KAFKA_GROUP="bench_$RUN_ID" KAFKA_PARTITIONS="$PARTITIONS"
  export LOG_FORMAT=json LOG_LEVEL=warn
  "$BIN" migrate
}

cleanup_db() {
  psql -X -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
}

now() { date +%s.%N; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

bench_ingest() {
  setup
  log "pre-producing $EVENTS events to $KAFKA_TOPIC ($PARTITIONS partitions)"
  "$BIN" generate --rate 0 --count "$EVENTS" --seed 7 --to kafka 2>"$WORK/produce.log" || {
    cat "$WORK/produce.log" >&2
    exit 1
  }
  tail -n 1 "$WORK/produce.log" >&2
  local bytes
  bytes=$("$BIN" generate --rate 0 --count "$EVENTS" --seed 7 --to csv:"$WORK/rows.csv" 2>/dev/null && stat -c %s "$WORK/rows.csv")

  # Baseline: psql COPY of the same rows into an identical (partitioned, same index) table.
  psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" <<'SQL'
CREATE TABLE logs_copy (LIKE logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (ts);
CREATE INDEX ON logs_copy USING brin (ts);
DO $$
DECLARE d date;
BEGIN
  FOR d IN SELECT generate_series(current_date - 2, current_date + 1, interval '1 day')::date LOOP
    EXECUTE format('CREATE TABLE logs_copy_%s PARTITION OF logs_copy FOR VALUES FROM (%L) TO (%L)',
                   to_char(d, 'YYYYMMDD'), d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
  END LOOP;
END $$;
SQL
  log "baseline: psql COPY of $EVENTS rows ($((bytes / 1048576)) MiB CSV)"
  local t0 t1
  t0=$(now)
  psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" \
    -c "\\copy logs_copy (ts, level, service, user_id, message, tokens, attrs, topic, \"partition\", \"offset\") FROM '$WORK/rows.csv' CSV"
  t1=$(now)
  local copy_s
  copy_s=$(secs "$t0" "$t1")

  log "log-analyzer ingest: from start to zero lag"
  t0=$(now)
  "$BIN" ingest 2>"$WORK/ingest.log" &
  INGEST_PID=$!
  local stored=0
  while [ "$stored" -lt "$EVENTS" ]; do
    sleep 0.1
    stored=$(psql -X -qtA "$DATABASE_URL" -c "SELECT COALESCE(sum(next_offset), 0) FROM kafka_offsets WHERE topic = '$KAFKA_TOPIC'")
    kill -0 "$INGEST_PID" 2>/dev/null || { tail -n 20 "$WORK/ingest.log" >&2; exit 1; }
  done
  t1=$(now)
  kill -TERM "$INGEST_PID"
  wait "$INGEST_PID" || true
  INGEST_PID=
  local ingest_s rows
  ingest_s=$(secs "$t0" "$t1")
  rows=$(psql -X -qtA "$DATABASE_URL" -c "SELECT count(*) FROM logs")
  [ "$rows" = "$EVENTS" ] || { log "ERROR: logs holds $rows rows, expected $EVENTS"; exit 1; }

  local ingest_rate copy_rate ratio
  ingest_rate=$(rate "$EVENTS" "$ingest_s")
  copy_rate=$(rate "$EVENTS" "$copy_s")
  ratio=$(awk -v a="$ingest_rate" -v b="$copy_rate" 'BEGIN { printf "%.2f", a / b }')
  printf '\n%-34s %12s %10s\n' "ingest of $EVENTS events" "events/s" "seconds"
  printf '%-34s %12s %10s\n' "log-analyzer ingest (to zero lag)" "$ingest_rate" "$ingest_s"
  printf '%-34s %12s %10s\n' "psql COPY, same rows (baseline)" "$copy_rate" "$copy_s"
  printf '%-34s %12s\n' "ratio ingest / COPY" "$ratio"
  cleanup_db
  if [ "$QUICK" = 0 ]; then
    record_ingest "$ingest_rate" "$ingest_s" "$copy_rate" "$copy_s" "$ratio"
  fi
}

machine() {
  echo "- machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
  echo "- $(psql -X -qtA "$ADMIN_URL" -c 'SHOW server_version' | sed 's/^/PostgreSQL /'), Kafka $(grep -o '<kafka.version>[^<]*' deploy/kafka/pom.xml | cut -d'>' -f2) (KRaft, one node, same machine), $(rustc --version)"
}

record_ingest() {
  local file=docs/BENCHMARKS.md
  [ -f "$file" ] || printf '# Benchmarks\n\nProduced by `scripts/bench.sh`; each figure is measured with its baseline in the same run.\n' >"$file"
  {
    echo
    echo "## ingest — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    machine
    echo "- $EVENTS events (~250 B JSON each) pre-produced to $PARTITIONS partitions; \`scripts/bench.sh ingest\`"
    echo
    echo "| path | events/s | seconds |"
    echo "|---|---:|---:|"
    echo "| log-analyzer ingest, start to zero lag | $1 | $2 |"
    echo "| psql \`COPY\` of the same rows (baseline) | $3 | $4 |"
    echo "| ratio | $5 | |"
  } >>"$file"
  log "appended to $file"
}

case "${1:-}" in
ingest) bench_ingest ;;
*)
  echo "usage: $0 ingest [--quick]" >&2
  exit 2
  ;;
esac
