#!/usr/bin/env bash
# Benchmarks, each with its baseline measured in the same run on the same machine.
#
#   scripts/bench.sh ingest [--quick]    events/s of `log-analyzer ingest` from pre-produced events to
#                                        zero lag, vs psql COPY of the same rows into an identical table
#   scripts/bench.sh peer [--quick]      the same as ingest, with the Apache Flink peer required: Flink
#                                        SQL in a local mini-cluster (bench/peers/flink) stores the same
#                                        pre-produced events through its JDBC sink and computes the
#                                        10-second error counts per service as a windowed query, checked
#                                        against SQL over log-analyzer's stored rows (`ingest` runs the
#                                        peer too when it builds; BENCH_PEER=0 skips it)
#   scripts/bench.sh query [--quick]     /stats/errors latency (wrk) for 10s, 5m and 1h windows from the
#                                        `run` process while it ingests at BENCH_RATE, with an hour of
#                                        history in PostgreSQL, vs the same answers computed by SQL;
#                                        then produce→visible latency through POST /ingest
#   scripts/bench.sh freshness [--quick] produce→visible: probes with a unique service each, POSTed to
#                                        /ingest (which answers once Kafka acked them) while `run` ingests
#                                        BENCH_RATE events/s; the time until /stats/errors counts the
#                                        probe, vs the time until a direct SQL count sees its row
#   scripts/bench.sh ingest-http [--quick] lines/s through POST /ingest (an `api` process: each 202 means
#                                        every line is acknowledged by Kafka) with 1,000-line and
#                                        20,000-line bodies, vs the Kafka path: the same generator
#                                        producing the same events straight to Kafka
#   scripts/bench.sh memory [--quick]    RSS (VmRSS) of `run --generate BENCH_RATE` every 10 s for 10 min
#                                        (--quick: every 5 s for 30 s): start, end, max, slope; flat or growing
#   scripts/bench.sh embedded [--quick]  the embedded mode (one SQLite file; no Kafka, PostgreSQL or Redis,
#                                        so it needs no stack): events/s committed through POST /ingest at
#                                        a fixed offered rate (open loop, `generate --to http://…`) vs a bare
#                                        SQLite bulk insert of the same rows in one transaction
#                                        (examples/sqlite_bulk_baseline.rs), times up to an hour late and
#                                        (each against its own baseline) in arrival order; VmRSS of `run` at
#                                        10k events/s every 10 s for 10 min (BENCH_EMBEDDED_RSS_SECONDS;
#                                        --quick: 20 s); the 1 h window answered from
#                                        memory vs the same question as SQL over the same rows
#                                        (`source=sqlite`), wrk on both
#   scripts/bench.sh protocols [--quick] events/s stored through POST /ingest NDJSON (the baseline), OTLP/HTTP
#                                        protobuf, OTLP/gRPC and Loki push protobuf+snappy, one after the
#                                        other in one `run`, each offered fixed rates (open loop) stepping
#                                        up; see scripts/bench-protocols.sh
#   scripts/bench.sh recovery [--quick]  kill -9 of an ingest while events flow, restarted at once: seconds to
#                                        its first stored rows, dynamic vs static membership (INSTANCE_ID),
#                                        3 kills each in one run; see scripts/bench-scale.sh
#   scripts/bench.sh scale [--quick]     ingest events/s against partitions (1, 6, 24) and processes (1, 2, 3);
#                                        freshness p50/p99 against the ingest rate (1k, 10k, 50k events/s);
#                                        PNG charts (gnuplot) in docs/; see scripts/bench-scale.sh
#   scripts/bench.sh openloop [--quick]  /stats/errors p50/p99/p99.9 at fixed offered rates (vegeta, open
#                                        loop) for 10s, 5m and 1h windows, idle and while ingesting, with
#                                        the load tool's CPU; see scripts/bench-openloop.sh
#   scripts/bench.sh ingest2 [--quick]   ingest against psql COPY (before and after), instrumented and bare
#                                        (MAILBOX_METRICS=on/off), the kcat | psql COPY floor, and a perf
#                                        profile; see scripts/bench-ingest.sh
#   scripts/bench.sh cardinality [--quick] 10, 1k, 10k and 100k distinct services (and users) over the 1 h
#                                        horizon: ingest events/s, RSS, /stats/errors?window=1h p50/p99
#                                        under vegeta at a fixed rate, answer bytes; see
#                                        scripts/bench-cardinality.sh
#   scripts/bench.sh search [--quick]    GET /logs newest-100 p50/p99/p99.9 (vegeta, open loop; pgbench of its
#                                        SQL until the route exists) over 10M stored rows, vs ILIKE '%tok%';
#                                        each search index's ingest cost; see scripts/bench-search.sh
#   scripts/bench.sh dashboard [--quick] server CPU and RSS of `run --generate 5000` with 0 and then 100
#                                        dashboards on /ws in the same run; see scripts/bench-dashboard.sh
#   scripts/bench.sh tail [--quick]      ingest events/s with and without the tail's announcement
#                                        (TAIL_NOTIFY=on/off), and with a tail client served; see
#                                        scripts/bench-tail.sh
#   scripts/bench.sh all [--quick]       every one of them in sequence
#
# Figures are printed and appended to docs/BENCHMARKS.md, except with --quick, which only proves the
# harness works end to end (tiny sizes, debug build, docs untouched; CI runs `all --quick`).
# BENCH_PROFILE=debug|release overrides the build (default: release, debug with --quick).
# BENCH_STACK=running skips `scripts/stack.sh up` (the stack is already up).
# BENCH_BIN=PATH measures that binary (the generator stays this checkout's build), e.g. an older
# build, to compare two versions in one session.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

QUICK=0
for arg in "$@"; do [ "$arg" = --quick ] && QUICK=1; done
if [ "$QUICK" = 1 ]; then
  EVENTS="${BENCH_EVENTS:-20000}"
  PROFILE="${BENCH_PROFILE:-debug}"
else
  EVENTS="${BENCH_EVENTS:-2000000}"
  PROFILE="${BENCH_PROFILE:-release}"
fi
PARTITIONS="${BENCH_PARTITIONS:-6}"

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# Once per invocation: the stack, the build, a scratch folder, and cleanup on any exit.
PREPARED=0
prepare() {
  [ "$PREPARED" = 1 ] && return
  PREPARED=1
  # BENCH_STACK=running: the stack is up already (shared with others); only read its addresses.
  [ "${BENCH_STACK:-}" = running ] || scripts/stack.sh up
  set -a
  eval "$(scripts/stack.sh env)"
  set +a
  prepare_build
}

# The build, a scratch folder and cleanup on any exit: all the embedded benchmark needs.
BUILT=0
prepare_build() {
  [ "$BUILT" = 1 ] && return
  BUILT=1
  if [ "$PROFILE" = release ]; then
    cargo build --release --quiet
  else
    cargo build --quiet
  fi
  # The generator is always this checkout's, so two binaries measured one after the other get the
  # same events.
  GEN="$ROOT/target/$PROFILE/log-analyzer"
  BIN="${BENCH_BIN:-$GEN}"
  [ -x "$BIN" ] || die "BENCH_BIN=$BIN is not an executable"
  WORK="$(mktemp -d)"
  ADMIN_URL="${DATABASE_URL:-}"
  DB=
  trap 'stop_run; [ -n "${PEER_PID:-}" ] && kill "$PEER_PID" 2>/dev/null; if [ -n "$DB" ]; then cleanup_db; fi; cp "$WORK"/*.log /tmp/ 2>/dev/null; rm -rf "$WORK"' EXIT
}

# Per benchmark: its own database, topic, consumer group and Redis prefix.
setup() {
  prepare
  RUN_ID="$(date +%s)_$$_$((++SETUPS))"
  DB="la_bench_$RUN_ID"
  psql -X -q "$ADMIN_URL" -c "CREATE DATABASE $DB"
  export DATABASE_URL="${ADMIN_URL%/*}/$DB"
  export KAFKA_TOPIC="bench_$RUN_ID" KAFKA_GROUP="bench_$RUN_ID" KAFKA_PARTITIONS="$PARTITIONS"
  export REDIS_PREFIX="bench_$RUN_ID"
  export LOG_FORMAT=json LOG_LEVEL=warn ADMIN_ADDR=127.0.0.1:0
  "$BIN" migrate
}
SETUPS=0

cleanup_db() {
  psql -X -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
  DB=
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until "$@" (a probe command) succeeds while the process $1 (named $2, writing to the log $3)
# lives, for at most $4 seconds; else prints the log's tail and fails the benchmark.
wait_for() {
  local pid=$1 name=$2 logfile=$3 limit=$4
  shift 4
  local deadline=$((SECONDS + limit))
  until "$@"; do
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$logfile" >&2; die "$name exited before it was ready"; }
    [ "$SECONDS" -lt "$deadline" ] || { tail -n 20 "$logfile" >&2; die "$name not ready after $limit s"; }
    sleep 0.2
  done
}

# Probes for wait_for: memory answers at $URL (readyz), or the process at $1 answers /healthz.
memory_ready() { curl -fs "$URL/readyz" 2>/dev/null | grep -q '"memory":"ready"'; }
answers_health() { curl -fs "$1/healthz" >/dev/null 2>&1; }

# Starts `api` (extra environment in the caller's exports, gRPC and admin on ports of their own) and
# waits until it answers /healthz; its log is $WORK/$1.log. Sets API_PID and API_URL.
start_api() {
  local name=$1 port admin
  port=$(free_port)
  admin=$(free_port)
  API_URL="http://127.0.0.1:$port"
  HTTP_ADDR="127.0.0.1:$port" ADMIN_ADDR="127.0.0.1:$admin" GRPC_ADDR="${GRPC_ADDR-127.0.0.1:0}" \
    "$BIN" api 2>"$WORK/$name.log" &
  API_PID=$!
  wait_for "$API_PID" api "$WORK/$name.log" 60 answers_health "$API_URL"
}

# Starts `run --generate RATE` (extra environment in the caller's exports) and waits until memory
# answers; sets RUN_PID and URL.
RUN_PID=
start_run() {
  local rate=$1 port admin
  port=$(free_port)
  admin=$(free_port)
  log "log-analyzer run --generate $rate"
  # gRPC on a port of its own unless the caller chose one: the default 4317 may be taken.
  HTTP_ADDR="127.0.0.1:$port" ADMIN_ADDR="127.0.0.1:$admin" GRPC_ADDR="${GRPC_ADDR-127.0.0.1:0}" \
    DATABASE_TIMEOUT_MS=120000 "$BIN" run --generate "$rate" 2>"$WORK/run.log" &
  RUN_PID=$!
  URL="http://127.0.0.1:$port"
  RUN_ADMIN="http://127.0.0.1:$admin"
  wait_for "$RUN_PID" run "$WORK/run.log" 120 memory_ready
}

stop_run() {
  if [ -n "$RUN_PID" ]; then
    kill -TERM "$RUN_PID" 2>/dev/null || true
    wait "$RUN_PID" || true
    RUN_PID=
  fi
}

now() { date +%s.%N; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
# Percentile $1 (0..100) of the numbers on stdin (nearest rank).
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int(NR*p/100+0.999); if (i<1) i=1; if (i>NR) i=NR; print a[i]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

machine() {
  echo "- machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
  echo "- $(psql -X -qtA "$ADMIN_URL" -c 'SHOW server_version' | sed 's/^/PostgreSQL /'), Kafka $(grep -o '<kafka.version>[^<]*' deploy/kafka/pom.xml | cut -d'>' -f2) (KRaft, one node, same machine), $(rustc --version)"
}

# Appends stdin to docs/BENCHMARKS.md (full runs only: --quick leaves the tree clean).
record() {
  local file=docs/BENCHMARKS.md
  if [ "$QUICK" = 1 ]; then
    cat >/dev/null
    return
  fi
  [ -f "$file" ] || printf '# Benchmarks\n\nProduced by `scripts/bench.sh`; each figure is measured with its baseline in the same run.\n' >"$file"
  cat >>"$file"
  log "appended to $file"
}

# An empty table shaped like `logs` (same columns, partitioned by day from two days ago to tomorrow,
# BRIN on ts) for a baseline to write into.
logs_like() {
  psql -X -q -v ON_ERROR_STOP=1 -v t="$1" "$DATABASE_URL" <<'SQL'
CREATE TABLE :"t" (LIKE logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (ts);
CREATE INDEX ON :"t" USING brin (ts);
SELECT format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)', :'t' || '_' || to_char(d, 'YYYYMMDD'), :'t',
              d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC')
FROM (SELECT generate_series(current_date - 2, current_date + 1, interval '1 day')::date AS d) days
\gexec
SQL
}

# Makes table $1 shaped like `logs` with every index `logs` has, read from the catalogue (what the
# migrations made, today a BRIN on ts and the search indexes: a btree in search order, a GIN on
# tokens, a btree on the Kafka position), so the baseline COPY pays the index inserts the ingest pays.
logs_like_indexed() {
  psql -X -q -v ON_ERROR_STOP=1 -v t="$1" "$DATABASE_URL" <<'SQL'
CREATE TABLE :"t" (LIKE logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (ts);
SELECT regexp_replace(pg_get_indexdef(i.indexrelid), '^CREATE INDEX \S+ ON ONLY \S+ ',
                      format('CREATE INDEX %I ON %I ', :'t' || '_' || c.relname, :'t'))
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = 'logs'::regclass
\gexec
SELECT format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)', :'t' || '_' || to_char(d, 'YYYYMMDD'), :'t',
              d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC')
FROM (SELECT generate_series(current_date - 2, current_date + 1, interval '1 day')::date AS d) days
\gexec
SQL
  local have want
  have=$(psql -X -qtA "$DATABASE_URL" -c "SELECT count(*) FROM pg_index WHERE indrelid = '$1'::regclass")
  want=$(psql -X -qtA "$DATABASE_URL" -c "SELECT count(*) FROM pg_index WHERE indrelid = 'logs'::regclass")
  [ "$have" = "$want" ] || die "$1 has $have indexes, logs has $want"
}

bench_ingest() {
  setup
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  log "pre-producing $EVENTS events to $KAFKA_TOPIC ($PARTITIONS partitions)"
  "$GEN" generate --rate 0 --count "$EVENTS" --seed 7 --to kafka 2>"$WORK/produce.log" || {
    cat "$WORK/produce.log" >&2
    exit 1
  }
  tail -n 1 "$WORK/produce.log" >&2
  local bytes
  bytes=$("$GEN" generate --rate 0 --count "$EVENTS" --seed 7 --to csv:"$WORK/rows.csv" 2>/dev/null && stat -c %s "$WORK/rows.csv")

  # Baseline: psql COPY of the same rows into an identical (partitioned, same indexes) table.
  logs_like_indexed logs_copy
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
  RUN_PID=$!
  local stored=0
  while [ "$stored" -lt "$EVENTS" ]; do
    sleep 0.1
    stored=$(psql -X -qtA "$DATABASE_URL" -c "SELECT COALESCE(sum(next_offset), 0) FROM kafka_offsets WHERE topic = '$KAFKA_TOPIC'")
    kill -0 "$RUN_PID" 2>/dev/null || { tail -n 20 "$WORK/ingest.log" >&2; exit 1; }
  done
  t1=$(now)
  LA_CPU=$(cpu_secs "$RUN_PID")
  kill -TERM "$RUN_PID"
  wait "$RUN_PID" || true
  RUN_PID=
  local ingest_s rows
  ingest_s=$(secs "$t0" "$t1")
  rows=$(psql -X -qtA "$DATABASE_URL" -c "SELECT count(*) FROM logs")
  [ "$rows" = "$EVENTS" ] || { log "ERROR: logs holds $rows rows, expected $EVENTS"; exit 1; }

  local ingest_rate copy_rate ratio ingest_span
  ingest_rate=$(rate "$EVENTS" "$ingest_s")
  copy_rate=$(rate "$EVENTS" "$copy_s")
  ratio=$(ratio "$ingest_rate" "$copy_rate")
  ingest_span=$(commit_span logs)
  printf '\n%-34s %12s %10s\n' "ingest of $EVENTS events" "events/s" "seconds"
  printf '%-34s %12s %10s\n' "log-analyzer ingest (to zero lag)" "$ingest_rate" "$ingest_s"
  printf '%-34s %12s %10s\n' "psql COPY, same rows (baseline)" "$copy_rate" "$copy_s"
  printf '%-34s %12s\n' "ratio ingest / COPY" "$ratio"

  PEER_ROWS=""
  PEER_NOTE=""
  if [ "$PEER" != off ] && peer_build; then
    bench_peer "$ingest_rate" "$ingest_s" "$ingest_span" "$copy_rate"
  elif [ "$PEER" = required ]; then
    log "ERROR: the Flink peer did not build"
    exit 1
  fi
  cleanup_db
  {
    echo
    echo "## ingest — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    machine
    echo "- $EVENTS events (~250 B JSON each) pre-produced to $PARTITIONS partitions; \`scripts/bench.sh $BENCH_CMD\`"
    [ -z "$PEER_ROWS" ] || echo "- peer: $(peer_versions)"
    echo "- load average (1, 5, 15 min) when the measurements began: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared)"
    echo
    echo "| path | events/s | seconds |"
    echo "|---|---:|---:|"
    echo "| log-analyzer ingest, start to zero lag | $ingest_rate | $ingest_s |"
    echo "| psql \`COPY\` of the same rows (baseline) | $copy_rate | $copy_s |"
    echo "| ratio | $ratio | |"
    [ -z "$PEER_ROWS" ] || printf '%s\n' "$PEER_ROWS"
    [ -z "$PEER_NOTE" ] || { echo; echo "$PEER_NOTE"; }
  } | record
}

# CPU seconds (user + system) a live process has used so far: on a shared machine, less sensitive to
# other load than wall time. Only the process itself: PostgreSQL's work for it is not included.
cpu_secs() {
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.1f", ($12 + $13) / hz }' "/proc/$1/stat"
}

# Seconds from the first to the last commit of rows into TABLE (ingested_at is the transaction's
# now()): the rate once running, without process start-up.
commit_span() {
  psql -X -qtA "$DATABASE_URL" -c "SELECT round(extract(epoch FROM max(ingested_at) - min(ingested_at))::numeric, 2) FROM $1"
}

# Builds bench/peers/flink (Maven: Flink 2.0 SQL, its Kafka and JDBC connectors, the PostgreSQL
# driver). On failure, PEER_NOTE says why, for docs/BENCHMARKS.md.
peer_build() {
  PEER_DIR="$ROOT/bench/peers/flink"
  command -v mvn >/dev/null || { PEER_NOTE="Flink peer not run: no mvn"; log "$PEER_NOTE"; return 1; }
  log "building the Flink peer (mvn package)"
  if ! mvn -B -q -f "$PEER_DIR/pom.xml" package >"$WORK/peer-build.log" 2>&1; then
    PEER_NOTE="Flink peer not run: \`mvn -q -f bench/peers/flink/pom.xml package\` failed: $(grep -m1 ERROR "$WORK/peer-build.log" | cut -c1-300)"
    log "$PEER_NOTE"
    return 1
  fi
}

# Runs the Flink peer's jobs on the topic log-analyzer just ingested (each job reads it from the
# start with its own consumer group): ingest into logs_flink, then the 10-second windows.
bench_peer() {
  local la_rate="$1" la_span="$3" copy_rate="$4" # $2: its seconds (unused here)
  # DATABASE_URL (postgres://user[:password]@host:port/db) as a JDBC URL for the bench database.
  local rest="${DATABASE_URL#*://}" userinfo="" hostport
  case "$rest" in *@*) userinfo="${rest%%@*}" rest="${rest#*@}" ;; esac
  hostport="${rest%%/*}"
  local jdbc="jdbc:postgresql://$hostport/$DB?reWriteBatchedInserts=true&stringtype=unspecified"
  [ -z "$userinfo" ] || jdbc+="&user=${userinfo%%:*}"
  case "$userinfo" in *:*) jdbc+="&password=${userinfo#*:}" ;; esac
  local java_opts=(-Xms512m -Xmx1g -XX:+UseG1GC)
  # The same shape as logs (partitioned by day, its indexes). The JDBC sink's PostgreSQL dialect does
  # not quote column names, and "partition"/"offset" are reserved words: it inserts through a view.
  logs_like_indexed logs_flink
  psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" <<'SQL'
CREATE VIEW logs_flink_in AS
  SELECT ts, level, service, user_id, message, tokens, attrs, topic,
         "partition" AS kafka_partition, "offset" AS kafka_offset FROM logs_flink;
CREATE TABLE flink_windows (window_start timestamptz, service text, total bigint, errors bigint);
SQL
  local t0 t1 peer_s peer_job_s
  log "Flink peer, job 1: Kafka → JDBC sink into logs_flink (from JVM start until the job has finished)"
  t0=$(now)
  java "${java_opts[@]}" -cp "$PEER_DIR/target/classes:$PEER_DIR/target/lib/*" dev.loganalyzer.peer.FlinkPeer ingest \
    --brokers "$KAFKA_BROKERS" --topic "$KAFKA_TOPIC" --group "${KAFKA_GROUP}_flink_ingest" \
    --jdbc "$jdbc" --table logs_flink_in >"$WORK/peer-ingest.out" 2>"$WORK/peer-ingest.log" &
  PEER_PID=$!
  peer_wait ingest
  t1=$PEER_DONE
  local peer_cpu=$PEER_CPU
  peer_s=$(secs "$t0" "$t1")
  peer_job_s=$(sed -n 's/^flink-peer: job=ingest seconds=//p' "$WORK/peer-ingest.out")
  local rows
  rows=$(psql -X -qtA "$DATABASE_URL" -c "SELECT count(*) FROM logs_flink")
  [ "$rows" = "$EVENTS" ] || { log "ERROR: logs_flink holds $rows rows, expected $EVENTS"; exit 1; }
  local peer_span
  peer_span=$(commit_span logs_flink)

  log "Flink peer, job 2: 10-second tumbling windows (event time) of total and error counts per service"
  t0=$(now)
  java "${java_opts[@]}" -cp "$PEER_DIR/target/classes:$PEER_DIR/target/lib/*" dev.loganalyzer.peer.FlinkPeer windows \
    --brokers "$KAFKA_BROKERS" --topic "$KAFKA_TOPIC" --group "${KAFKA_GROUP}_flink_windows" \
    --jdbc "$jdbc" --table flink_windows --lateness-seconds 180 >"$WORK/peer-windows.out" 2>"$WORK/peer-windows.log" &
  PEER_PID=$!
  peer_wait windows
  t1=$PEER_DONE
  local win_cpu=$PEER_CPU
  local win_s win_job_s
  win_s=$(secs "$t0" "$t1")
  win_job_s=$(sed -n 's/^flink-peer: job=windows seconds=//p' "$WORK/peer-windows.out")

  # Every window Flink wrote against the same count by SQL over log-analyzer's stored rows.
  local check
  check=$(psql -X -qtA -F ' ' "$DATABASE_URL" <<'SQL'
WITH sql AS (
  SELECT to_timestamp(floor(extract(epoch FROM ts) / 10) * 10) AS window_start, service,
         count(*) AS total, count(*) FILTER (WHERE level >= 4) AS errors
  FROM logs GROUP BY 1, 2)
SELECT count(*),
       count(*) FILTER (WHERE f.total IS DISTINCT FROM s.total OR f.errors IS DISTINCT FROM s.errors),
       coalesce(sum(f.errors), 0)
FROM sql s FULL JOIN flink_windows f USING (window_start, service);
SQL
)
  local windows mismatched errors_total
  read -r windows mismatched errors_total <<<"$check"
  log "windows: $windows (service × 10 s), $mismatched differ from SQL over logs; $errors_total errors counted"
  psql -X -q "$DATABASE_URL" -c "SELECT f.window_start, f.service, f.errors AS flink_errors, count(*) FILTER (WHERE l.level >= 4) AS sql_errors, f.total AS flink_total, count(l.*) AS sql_total FROM (SELECT * FROM flink_windows ORDER BY errors DESC, service LIMIT 3) f LEFT JOIN logs l ON l.service = f.service AND l.ts >= f.window_start AND l.ts < f.window_start + interval '10 seconds' GROUP BY 1, 2, 3, 5 ORDER BY 3 DESC" >&2
  [ "$mismatched" = 0 ] || { log "ERROR: $mismatched windows differ"; exit 1; }

  local peer_rate peer_job_rate la_span_rate peer_span_rate win_rate win_job_rate
  peer_rate=$(rate "$EVENTS" "$peer_s")
  peer_job_rate=$(rate "$EVENTS" "$peer_job_s")
  la_span_rate=$(rate "$EVENTS" "$la_span")
  peer_span_rate=$(rate "$EVENTS" "$peer_span")
  win_rate=$(rate "$EVENTS" "$win_s")
  win_job_rate=$(rate "$EVENTS" "$win_job_s")
  ratio_of() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
  printf '%-34s %12s %10s\n' "Flink SQL ingest (JVM start→done)" "$peer_rate" "$peer_s"
  printf '%-34s %12s %10s\n' "  job submit→done" "$peer_job_rate" "$peer_job_s"
  printf '%-34s %12s %10s\n' "first→last commit: log-analyzer" "$la_span_rate" "$la_span"
  printf '%-34s %12s %10s\n' "first→last commit: Flink" "$peer_span_rate" "$peer_span"
  printf '%-34s %12s\n' "ratio log-analyzer / Flink ingest" "$(ratio_of "$la_rate" "$peer_rate")"
  printf '%-34s %12s\n' "ratio Flink ingest / COPY" "$(ratio_of "$peer_rate" "$copy_rate")"
  printf '%-34s %12s %10s\n' "Flink 10 s windows (JVM start→done)" "$win_rate" "$win_s"
  printf '%-34s %12s %10s\n' "  job submit→done" "$win_job_rate" "$win_job_s"
  printf '%-34s %12s\n' "ratio log-analyzer / Flink windows" "$(ratio_of "$la_rate" "$win_rate")"
  printf 'CPU seconds of the process (user + sys; PostgreSQL not included): log-analyzer ingest %s, Flink ingest JVM %s, Flink windows JVM %s\n' \
    "$LA_CPU" "$peer_cpu" "$win_cpu"
  PEER_ROWS="| Flink SQL ingest (Kafka → JDBC sink), JVM start until the job finished | $peer_rate | $peer_s |
| — the same, Flink job submission until finished | $peer_job_rate | $peer_job_s |
| first to last commit of rows: log-analyzer | $la_span_rate | $la_span |
| first to last commit of rows: Flink | $peer_span_rate | $peer_span |
| ratio log-analyzer / Flink ingest (start to done) | $(ratio_of "$la_rate" "$peer_rate") | |
| ratio Flink ingest / COPY | $(ratio_of "$peer_rate" "$copy_rate") | |
| Flink SQL 10 s tumbling error counts per service, JVM start until finished | $win_rate | $win_s |
| — the same, Flink job submission until finished | $win_job_rate | $win_job_s |
| ratio log-analyzer ingest / Flink windows | $(ratio_of "$la_rate" "$win_rate") | |
| CPU seconds of the process itself (user + sys, PostgreSQL not included): log-analyzer ingest / Flink ingest JVM / Flink windows JVM | $LA_CPU / $peer_cpu / $win_cpu | |"
  PEER_NOTE="Flink peer windows: $windows (service × 10 s) written, $mismatched differing from SQL over log-analyzer's rows."
}

# Waits for the peer's job to report it has finished (or for the JVM to end); fails on an error.
peer_wait() {
  while ! grep -q "^flink-peer: job=$1 " "$WORK/peer-$1.out" 2>/dev/null; do
    if ! kill -0 "$PEER_PID" 2>/dev/null; then
      wait "$PEER_PID" || true
      grep -q "^flink-peer: job=$1 " "$WORK/peer-$1.out" 2>/dev/null && break
      grep -v '^\s*at ' "$WORK/peer-$1.log" | tail -n 20 >&2
      log "ERROR: Flink peer job $1 failed"
      exit 1
    fi
    sleep 0.1
  done
  PEER_DONE=$(now)
  PEER_CPU=$(cpu_secs "$PEER_PID" 2>/dev/null || echo n/a)
  wait "$PEER_PID" || { log "ERROR: Flink peer job $1 exited non-zero"; exit 1; }
  PEER_PID=
}

peer_versions() {
  local pom="$ROOT/bench/peers/flink/pom.xml"
  v() { grep -o "<$1>[^<]*" "$pom" | cut -d'>' -f2; }
  echo "Apache Flink $(v flink.version) SQL in a local mini-cluster (parallelism 2, JVM heap 1 GiB), flink-connector-kafka $(v flink.kafka.version), flink-connector-jdbc $(v flink.jdbc.version), PostgreSQL JDBC $(v postgresql.version), $(java -version 2>&1 | head -n 1)"
}

# wrk's latency line value in milliseconds ("123.45us", "1.20ms", "2.00s").
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else printf "nan" }'
}

# Runs wrk; prints "req/s p50_ms p99_ms non2xx".
load() {
  local out
  out=$(wrk -t"$1" -c"$2" -d"$3" --timeout 60s --latency "$4")
  local rps p50 p99 bad
  rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  bad=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  echo "$rps $p50 $p99 ${bad:-0}"
}

bench_query() {
  command -v wrk >/dev/null || { log "installing wrk"; apt-get install -y -qq wrk >/dev/null; }
  setup
  local rate="${BENCH_RATE:-2000}" history_s=3600 duration=15s probes=50
  if [ "$QUICK" = 1 ]; then rate=200 history_s=120 duration=2s probes=3; fi
  local history=$((rate * history_s))
  log "history: $history events spread over the last $history_s s, straight into PostgreSQL"
  "$GEN" generate --rate 0 --count "$history" --seed 3 --late-ratio 1 --late-max "${history_s}s" \
    --to csv:"$WORK/history.csv" 2>/dev/null
  # Rows reach the table in time order in production (ingest follows the stream), which is what
  # keeps its BRIN index on ts useful: load the history the same way.
  sort -S 1G -o "$WORK/history.csv" "$WORK/history.csv"
  psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" \
    -c "\\copy logs (ts, level, service, user_id, message, tokens, attrs, topic, \"partition\", \"offset\") FROM '$WORK/history.csv' CSV"
  psql -X -q "$DATABASE_URL" -c "ANALYZE logs"
  rm -f "$WORK/history.csv"
  start_run "$rate"
  sleep 2

  # Memory first, then freshness, then SQL: long SQL scans would otherwise steal the CPU from both.
  declare -A m_rps m_p50 m_p99
  for w in 10s 5m 1h; do
    read -r m_rps[$w] m_p50[$w] m_p99[$w] _ < <(load 2 8 "$duration" "$URL/stats/errors?window=$w")
  done

  log "freshness: $probes probes through POST /ingest, polled until visible"
  local lat=()
  for i in $(seq "$probes"); do
    local svc="probe-$RUN_ID-$i" t0 t1 ts
    ts=$(date +%s%3N)
    t0=$(date +%s%N)
    curl -fs -X POST --data-binary "{\"level\":\"error\",\"service\":\"$svc\",\"message\":\"probe\",\"ts\":$ts}" "$URL/ingest" >/dev/null ||
      die "POST /ingest failed"
    local at=$((ts / 1000 + 1))
    poll_until 30 api_counts "$svc" "$at" || die "probe $svc not visible in /stats/errors after 30 s"
    t1=$(date +%s%N)
    lat+=($(((t1 - t0) / 1000000)))
    sleep 0.05
  done
  local f_p50 f_p99
  f_p50=$(printf '%s\n' "${lat[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)*0.5)]}')
  f_p99=$(printf '%s\n' "${lat[@]}" | sort -n | awk '{a[NR]=$1} END {i=int(NR*0.99+0.999); if (i>NR) i=NR; print a[i]}')

  # The same answers computed by SQL: the query the postgres path runs, its execution time (median of 3).
  log "SQL baseline: EXPLAIN ANALYZE of the /stats/errors query, 3 runs per window"
  local rows=""
  printf '\n%-7s | %-34s | %-18s | %s\n' window "memory (run): req/s p50 p99 ms" "SQL median ms" "SQL / memory p50"
  for w in 10s 5m 1h; do
    local seconds
    case $w in 10s) seconds=10 ;; 5m) seconds=300 ;; 1h) seconds=3600 ;; esac
    local times=()
    for _ in 1 2 3; do
      local to from
      to=$(date +%s)
      from=$((to - seconds))
      times+=("$(psql -X -qtA "$DATABASE_URL" -c "EXPLAIN (ANALYZE, FORMAT JSON) SELECT service, count(*), count(*) FILTER (WHERE level >= 4) FROM logs WHERE topic = '$KAFKA_TOPIC' AND ts >= to_timestamp($from) AND ts < to_timestamp($to) GROUP BY service" |
        python3 -c 'import json, sys; print(round(json.load(sys.stdin)[0]["Execution Time"], 2))')")
    done
    local sql_ms ratio
    sql_ms=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)
    ratio=$(awk -v a="$sql_ms" -v b="${m_p50[$w]}" 'BEGIN { if (b > 0) printf "%.0f", a / b; else print "n/a" }')
    printf '%-7s | %8s %10s %10s          | %18s | %sx\n' "$w" "${m_rps[$w]}" "${m_p50[$w]}" "${m_p99[$w]}" "$sql_ms" "$ratio"
    rows+="| $w | ${m_rps[$w]} | ${m_p50[$w]} | ${m_p99[$w]} | $sql_ms | ${ratio}x |"$'\n'
  done
  printf '\nfreshness (POST /ingest → visible in /stats/errors): p50 %s ms, p99 %s ms over %s probes\n' "$f_p50" "$f_p99" "$probes"
  stop_run
  cleanup_db
  {
      echo
      echo "## query and freshness — $(date -u +%Y-%m-%dT%H:%MZ)"
      echo
      machine
      echo "- \`scripts/bench.sh query\`: \`log-analyzer run --generate $rate\` ingesting $rate events/s while measured;"
      echo "  $history events of history (one hour at that rate, loaded in time order) in PostgreSQL; memory:"
      echo "  wrk on loopback for $duration per window, 2 threads and 8 connections (as fast as it answers, so"
      echo "  latencies include queueing); SQL: execution time of the same query the postgres path runs"
      echo "  (EXPLAIN ANALYZE, median of 3); times in ms"
      echo
      echo "| window | memory req/s | memory p50 | memory p99 | SQL | SQL / memory p50 |"
      echo "|---|---:|---:|---:|---:|---:|"
      printf '%s' "$rows"
      echo
      echo "Freshness, POST /ingest → visible in \`/stats/errors\` ($probes probes): p50 $f_p50 ms, p99 $f_p99 ms."
  } | record
}

# Runs "$@" (a polling command) until it succeeds; fails the benchmark after $1 seconds.
poll_until() {
  local limit=$1
  shift
  local deadline=$((SECONDS + limit))
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
  done
}

api_counts() { curl -fs "$URL/stats/errors?window=10s&service=$1&at=$2" | grep -q '"total":1'; }
# Runs $1 probes (scripts/freshness_probe.py: one at a time, each POSTed to $URL/ingest, then polled
# every 2 ms over kept-open connections, in /stats/errors and by SQL) and appends to the caller's
# arrays `post`, `wstart`, `sql` and `api` each probe's ms until the POST was answered (Kafka acked
# it), until its writer began the transaction that stored it (the row's ingested_at), until the SQL
# poll found the row and until /stats/errors counted it; sets POLL_API_MS and POLL_SQL_MS (the mean
# time of one look) and leaves the lines in $WORK/probes.txt.
freshness_probes() {
  local a b c d
  python3 scripts/freshness_probe.py "$URL" "$DATABASE_URL" "$RUN_ID" "$1" >"$WORK/probes.txt" ||
    die "freshness probes failed"
  while read -r a b c d; do
    if [ "$a" = polls ]; then
      POLL_API_MS=$b POLL_SQL_MS=$c
      continue
    fi
    post+=("$a") wstart+=("$b") sql+=("$c") api+=("$d")
  done <"$WORK/probes.txt"
}

# "count mean p50 p99" (ms; p50/p99 interpolated in the buckets) of each histogram named in $2…,
# summed over its labels, from the Prometheus text in file $1.
histogram_summary() {
  python3 - "$@" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
for name in sys.argv[2:]:
    buckets, total, count = {}, 0.0, 0
    for m in re.finditer(r'^' + name + r'_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)$', text, re.M):
        le = float('inf') if m.group(1) == '+Inf' else float(m.group(1))
        buckets[le] = buckets.get(le, 0) + float(m.group(2))
    for m in re.finditer(r'^' + name + r'_sum(?:\{[^}]*\})? (\S+)$', text, re.M):
        total += float(m.group(1))
    for m in re.finditer(r'^' + name + r'_count(?:\{[^}]*\})? (\S+)$', text, re.M):
        count += int(float(m.group(1)))
    def quantile(q):
        rank, lo, below = q * count, 0.0, 0.0
        for le in sorted(buckets):
            if buckets[le] >= rank:
                if le == float('inf'):
                    return lo
                return lo + (le - lo) * (rank - below) / max(buckets[le] - below, 1e-9)
            lo, below = le, buckets[le]
        return lo
    scale = 1 if name.endswith('_events') else 1000
    if count == 0:
        print(name, 0, '-', '-', '-')
    else:
        print(name, count, '%.1f' % (total / count * scale), '%.1f' % (quantile(0.5) * scale), '%.1f' % (quantile(0.99) * scale))
PY
}

# ms one poll of the stats API takes as the probe polls it (a curl process and grep), over $1 polls.
poll_cost() {
  local n=$1 t0 t1
  t0=$(date +%s%N)
  for _ in $(seq "$n"); do api_counts "no-such-service-$RUN_ID" 0 || true; done
  t1=$(date +%s%N)
  awk -v d=$((t1 - t0)) -v n="$n" 'BEGIN { printf "%.1f", d / n / 1e6 }'
}

bench_freshness() {
  setup
  local rate="${BENCH_RATE:-2000}" probes="${BENCH_PROBES:-100}"
  if [ "$QUICK" = 1 ]; then rate=200 probes=5; fi
  start_run "$rate"
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  log "freshness: $probes probes through POST /ingest while ingesting $rate events/s"
  local api=() sql=() post=() wstart=()
  freshness_probes "$probes"
  local stored poll_ms
  stored=$(psql -X -qtA "$DATABASE_URL" -c "SELECT count(*) FROM logs")
  poll_ms=$(poll_cost 50)
  curl -fs "$RUN_ADMIN/metrics" >"$WORK/metrics.txt" || die "no /metrics from run"
  local hist
  hist=$(histogram_summary "$WORK/metrics.txt" log_analyzer_consumer_take_delay_seconds \
    log_analyzer_writer_batch_age_seconds log_analyzer_writer_queue_seconds \
    log_analyzer_writer_batch_seconds log_analyzer_writer_batch_events)
  local load_end
  load_end=$(cut -d' ' -f1-3 /proc/loadavg)
  stop_run
  cleanup_db
  local a50 a99 amax s50 s99 smax
  a50=$(printf '%s\n' "${api[@]}" | pct 50)
  a99=$(printf '%s\n' "${api[@]}" | pct 99)
  amax=$(printf '%s\n' "${api[@]}" | pct 100)
  s50=$(printf '%s\n' "${sql[@]}" | pct 50)
  s99=$(printf '%s\n' "${sql[@]}" | pct 99)
  smax=$(printf '%s\n' "${sql[@]}" | pct 100)
  printf '\n%-46s %8s %8s %8s\n' "produce→visible, $probes probes (ms)" p50 p99 max
  printf '%-46s %8s %8s %8s\n' "GET /stats/errors counts it" "$a50" "$a99" "$amax"
  printf '%-46s %8s %8s %8s\n' "direct SQL count sees the row (baseline)" "$s50" "$s99" "$smax"
  printf '%-46s %8s %8s\n' "ratio API / SQL" "$(ratio "$a50" "$s50")" "$(ratio "$a99" "$s99")"
  # Per probe, stage by stage: POST → acked, acked → its writer's transaction began, → the row seen by
  # the SQL poll (write and commit), → the API counts it (SQL and API are polled at the same time,
  # so this last one can be below zero).
  local stage_rows
  stage_rows=$(awk '$1 != "polls" { print 1, $1; print 2, $2 - $1; print 3, $3 - $2; print 4, $4 - $3 }' "$WORK/probes.txt" |
    sort -k1,1n -k2,2g | awk '
    { v[$1, ++n[$1]] = $2; s[$1] += $2 }
    END {
      split("POST answered (Kafka acked)|acked → writer began its transaction|→ committed, seen by the SQL poll|→ counted by GET /stats/errors", name, "|")
      for (c = 1; c <= 4; c++) { i50 = int(n[c] * 0.5 + 0.999); i99 = int(n[c] * 0.99 + 0.999)
        printf "| %s | %.1f | %.1f | %.1f |\n", name[c], s[c] / n[c], v[c, i50], v[c, i99] } }')
  local hist_rows
  hist_rows=$(printf '%s\n' "$hist" | awk '
    BEGIN { d["log_analyzer_consumer_take_delay_seconds"] = "a message'"'"'s Kafka timestamp → its consumer takes it (per message; the generator stamps its event'"'"'s time, 2 % up to 2 min late, and lingers up to 20 ms), ms"
            d["log_analyzer_writer_batch_age_seconds"] = "batch age when handed to a writer (first message taken → handed), ms"
            d["log_analyzer_writer_queue_seconds"] = "handed → the writer starts it (writer queue), ms"
            d["log_analyzer_writer_batch_seconds"] = "the write: fence, COPY, commit, ms"
            d["log_analyzer_writer_batch_events"] = "messages per batch" }
    { printf "| %s | %s | %s | %s | %s |\n", d[$1], $2, $3, $4, $5 }')
  printf '\nper probe, stage by stage (ms): | stage | mean | p50 | p99 |\n%s\n' "$stage_rows"
  printf '\nevery message (the first row) and batch of the run (/metrics): | | observed | mean | p50 | p99 |\n%s\n' "$hist_rows"
  printf 'one look: API %s ms, SQL %s ms (kept-open connections); a curl process and grep instead: %s ms\n' \
    "$POLL_API_MS" "$POLL_SQL_MS" "$poll_ms"
  {
    echo
    echo "## freshness — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    machine
    echo "- \`${BENCH_RATE:+BENCH_RATE=$BENCH_RATE }${BENCH_PROBES:+BENCH_PROBES=$BENCH_PROBES }scripts/bench.sh freshness\`: \`log-analyzer run --generate $rate\` ingesting $rate events/s ($stored rows"
    echo "  stored during the run); $probes probes, one after the other, each an error event of its own service"
    echo "  POSTed to /ingest (answered once Kafka acked it); the clock starts before the POST. Visible:"
    echo "  \`/stats/errors?window=10s&service=…\` counts it. Baseline, polled at the same time the same way:"
    echo "  \`SELECT count(*) FROM logs WHERE ts = <the probe's ms> AND service = …\` finds the row. Both polled"
    echo "  every 2 ms by scripts/freshness_probe.py over a connection opened before the run (no process"
    echo "  start or connect per look)"
    echo
    echo "| produce→visible, ms | p50 | p99 | max |"
    echo "|---|---:|---:|---:|"
    echo "| stats API counts it | $a50 | $a99 | $amax |"
    echo "| direct SQL count sees the row (baseline) | $s50 | $s99 | $smax |"
    echo "| ratio API / SQL | $(ratio "$a50" "$s50") | $(ratio "$a99" "$s99") | |"
    echo
    echo "- load average (1, 5, 15 min) when the probes began: $LOAD_START; at the end: $load_end (the machine is shared)"
    echo "- one look took $POLL_API_MS ms (API) and $POLL_SQL_MS ms (SQL) on average; one curl process and grep per look, as"
    echo "  earlier runs of this benchmark polled, took $poll_ms ms"
    echo
    echo "Per probe, stage by stage (ms; each stage's p50/p99 on its own, so they do not add up to the total's):"
    echo
    echo "| stage | mean | p50 | p99 |"
    echo "|---|---:|---:|---:|"
    echo "$stage_rows"
    echo
    echo "Every message (the first row) and every batch of the run, from \`run\`'s /metrics (p50/p99 interpolated in the histogram's buckets):"
    echo
    echo "| | observed | mean | p50 | p99 |"
    echo "|---|---:|---:|---:|---:|"
    echo "$hist_rows"
  } | record
}

# Samples "SECONDS KiB" in $1 over a run of $2 seconds → "start end max slope slope2 verdict": MiB,
# least-squares slopes (MiB/min) over the whole run and over its second half, and flat or growing.
rss_stats() {
  local file=$1 total=$2 start end max slope slope2 verdict
  read -r start end max slope slope2 < <(awk -v half=$((total / 2)) '
    function fit(n, sx, sy, sxx, sxy) { return (n > 1 && n * sxx - sx * sx > 0) ? (n * sxy - sx * sy) / (n * sxx - sx * sx) : 0 }
    { x = $1 / 60; y = $2 / 1024; if (NR == 1) s = y; e = y; if (y > m) m = y
      n++; sx += x; sy += y; sxx += x * x; sxy += x * y
      if ($1 >= half) { n2++; sx2 += x; sy2 += y; sxx2 += x * x; sxy2 += x * y } }
    END { printf "%.1f %.1f %.1f %.2f %.2f\n", s, e, m, fit(n, sx, sy, sxx, sxy), fit(n2, sx2, sy2, sxx2, sxy2) }' "$file")
  # Flat: the second half's trend, carried over the whole run, adds less than 5 % of the start (a
  # run shorter than a minute counts as one minute).
  verdict=$(awk -v s="$slope2" -v st="$start" -v min=$((total / 60)) 'BEGIN { print (s * (min > 1 ? min : 1) < 0.05 * st) ? "flat" : "growing" }')
  echo "$start $end $max $slope $slope2 $verdict"
}

bench_memory() {
  setup
  local rate="${BENCH_RATE:-2000}" total=600 every=10
  if [ "$QUICK" = 1 ]; then rate=200 total=30 every=5; fi
  # The in-memory windows grow until they hold WINDOW_HORIZON of buckets; a horizon shorter than the
  # run lets the second half show whether anything else grows.
  local horizon="${BENCH_HORIZON:-5m}"
  WINDOW_HORIZON="$horizon" start_run "$rate"
  log "memory: VmRSS of pid $RUN_PID every $every s for $total s at $rate events/s"
  : >"$WORK/rss"
  local t0=$SECONDS
  for ((t = 0; t <= total; t += every)); do
    while [ $((SECONDS - t0)) -lt "$t" ]; do sleep 0.2; done
    kill -0 "$RUN_PID" 2>/dev/null || { tail -n 20 "$WORK/run.log" >&2; die "run exited during the memory benchmark"; }
    echo "$t $(awk '/^VmRSS:/ {print $2}' "/proc/$RUN_PID/status")" >>"$WORK/rss"
    log "  ${t}s: $(tail -n 1 "$WORK/rss" | awk '{printf "%.1f MiB", $2 / 1024}')"
  done
  local stored
  stored=$(psql -X -qtA "$DATABASE_URL" -c "SELECT count(*) FROM logs")
  stop_run
  cleanup_db
  local start end max slope slope2 verdict
  read -r start end max slope slope2 verdict < <(rss_stats "$WORK/rss" "$total")
  printf '\n%-40s %10s\n' "RSS of run --generate $rate, $total s" MiB
  printf '%-40s %10s\n' "right after start (baseline)" "$start"
  printf '%-40s %10s\n' "end" "$end"
  printf '%-40s %10s\n' "max" "$max"
  printf '%-40s %10s\n' "ratio end / start" "$(ratio "$end" "$start")"
  printf '%-40s %10s\n' "slope, whole run (MiB/min)" "$slope"
  printf '%-40s %10s\n' "slope, second half (MiB/min)" "$slope2"
  printf '%-40s %10s\n' "verdict" "$verdict"
  {
    echo
    echo "## memory — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    machine
    echo "- \`${BENCH_HORIZON:+BENCH_HORIZON=$BENCH_HORIZON }${BENCH_RATE:+BENCH_RATE=$BENCH_RATE }scripts/bench.sh memory\`: VmRSS of \`log-analyzer run --generate $rate\` (WINDOW_HORIZON=$horizon) from"
    echo "  /proc/PID/status every $every s for $total s, from the moment it answered ready; $stored rows stored"
    echo
    echo "| RSS | MiB |"
    echo "|---|---:|"
    echo "| right after start (baseline) | $start |"
    echo "| end | $end |"
    echo "| max | $max |"
    echo "| ratio end / start | $(ratio "$end" "$start") |"
    echo "| slope, whole run | $slope MiB/min |"
    echo "| slope, second half | $slope2 MiB/min |"
    echo
    echo "Verdict: **$verdict** (flat = the second half's slope over the whole run adds under 5 % of the start)."
    echo
    echo "Samples (seconds, MiB): $(awk '{printf "%s%d %.1f", (NR > 1 ? "; " : ""), $1, $2 / 1024}' "$WORK/rss")."
  } | record
}

# One generator run into $1 (`kafka` or the api's URL), extra generator flags after it; prints the
# seconds from start to exit (it exits once every event is acknowledged, non-zero if any was not).
generate_secs() {
  local to=$1 t0 t1
  shift
  t0=$(now)
  "$GEN" generate --rate 0 --count "$HTTP_EVENTS" --seed 11 --to "$to" "$@" 2>"$WORK/generate.log" || {
    tail -n 5 "$WORK/generate.log" >&2
    die "generate --to $to $* failed"
  }
  t1=$(now)
  tail -n 1 "$WORK/generate.log" >&2
  secs "$t0" "$t1"
}

bench_ingest_http() {
  setup
  HTTP_EVENTS="${BENCH_HTTP_EVENTS:-$([ "$QUICK" = 1 ] && echo 20000 || echo 400000)}"
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  start_api api
  # As `run`'s: stop_run stops it.
  RUN_PID=$API_PID
  URL=$API_URL
  log "log-analyzer api at $URL (POST /ingest only; nothing consumes the topic)"

  log "Kafka path: generate --to kafka, $HTTP_EVENTS events"
  local kafka_s http1k_s http20k_s
  kafka_s=$(generate_secs kafka)
  log "POST /ingest, 1,000-line bodies, 4 in flight"
  http1k_s=$(generate_secs "$URL" --batch 1000 --in-flight 4)
  log "POST /ingest, 20,000-line bodies, 4 in flight"
  http20k_s=$(generate_secs "$URL" --batch 20000 --in-flight 4)
  stop_run
  # Everything each path acknowledged is in the topic: three runs of HTTP_EVENTS events.
  local kafka_rate http1k_rate http20k_rate
  kafka_rate=$(rate "$HTTP_EVENTS" "$kafka_s")
  http1k_rate=$(rate "$HTTP_EVENTS" "$http1k_s")
  http20k_rate=$(rate "$HTTP_EVENTS" "$http20k_s")
  printf '\n%-40s %12s %10s %8s\n' "$HTTP_EVENTS events into Kafka" "lines/s" "seconds" "× Kafka"
  printf '%-40s %12s %10s %8s\n' "generate --to kafka (baseline)" "$kafka_rate" "$kafka_s" "1.00"
  printf '%-40s %12s %10s %8s\n' "POST /ingest, 1,000-line bodies" "$http1k_rate" "$http1k_s" "$(ratio "$http1k_rate" "$kafka_rate")"
  printf '%-40s %12s %10s %8s\n' "POST /ingest, 20,000-line bodies" "$http20k_rate" "$http20k_s" "$(ratio "$http20k_rate" "$kafka_rate")"
  cleanup_db
  {
    echo
    echo "## ingest-http — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    machine
    echo "- $HTTP_EVENTS generated events per path (seed 11) into a $PARTITIONS-partition topic, acks=all; the HTTP paths through one \`api\` process, 4 requests in flight; \`$PROFILE\` build; \`scripts/bench.sh $BENCH_CMD\`"
    echo "- load average (1, 5, 15 min) when the measurements began: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared)"
    echo
    echo "| path | lines/s | seconds | × Kafka path |"
    echo "|---|---:|---:|---:|"
    echo "| \`generate --to kafka\` (baseline) | $kafka_rate | $kafka_s | 1.00 |"
    echo "| POST /ingest, 1,000-line bodies | $http1k_rate | $http1k_s | $(ratio "$http1k_rate" "$kafka_rate") |"
    echo "| POST /ingest, 20,000-line bodies | $http20k_rate | $http20k_s | $(ratio "$http20k_rate" "$kafka_rate") |"
  } | record
}

# ---------------------------------------------------------------------------------------------
# The embedded mode: one SQLite file, no Kafka, PostgreSQL or Redis.

# Starts `run` in the embedded mode on the SQLite file $1 (extra environment in the caller's
# exports) and waits until memory answers; sets RUN_PID and URL. KAFKA_BROKERS and REDIS_URL are set
# empty explicitly: under `all` the stack's addresses are exported.
start_embedded() {
  local db=$1 port admin
  port=$(free_port)
  admin=$(free_port)
  log "log-analyzer run, embedded, on $db"
  # DATABASE_TIMEOUT_MS as in start_run: the SQL baseline is timed, not cut short.
  DATABASE_URL="sqlite://$db" KAFKA_BROKERS="" REDIS_URL="" HTTP_ADDR="127.0.0.1:$port" \
    ADMIN_ADDR="127.0.0.1:$admin" GRPC_ADDR=127.0.0.1:0 LOG_FORMAT=json LOG_LEVEL=warn DATABASE_TIMEOUT_MS=120000 \
    "$BIN" run 2>"$WORK/embedded.log" &
  RUN_PID=$!
  URL="http://127.0.0.1:$port"
  wait_for "$RUN_PID" "embedded run" "$WORK/embedded.log" 120 memory_ready
}

# Rows of `logs` above the keyword indexer's committed mark in the SQLite file $1.
index_lag() { sqlite_count "$1" "SELECT (SELECT coalesce(max(rowid), 0) FROM logs) - indexed_rowid FROM log_index"; }

sqlite_count() { python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])' "$1" "$2"; }

# One JSON field of the answer at $1.
json_field() { curl -fs "$1" | python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"; }

# The bare SQLite bulk insert of the NDJSON rows $1, which must store $2 rows
# (examples/sqlite_bulk_baseline, one transaction; further arguments passed on to it): sets
# BARE_RATE (rows/s) and BARE_S (seconds).
embedded_bare_insert() {
  local rows=$1 expected=$2 out stored profile_flag=()
  shift 2
  [ "$PROFILE" = release ] && profile_flag=(--release)
  out=$(cargo run -q "${profile_flag[@]}" --example sqlite_bulk_baseline -- "$rows" "$WORK/baseline.db" "$@") ||
    die "sqlite_bulk_baseline $* failed"
  log "  $out"
  rm -f "$WORK"/baseline.db*
  stored=$(sed -n 's/.*rows=\([0-9]*\) .*/\1/p' <<<"$out")
  [ "$stored" = "$expected" ] || die "the baseline stored $stored rows, expected $expected"
  BARE_RATE=$(sed -n 's/.*rows_per_s=\([0-9.]*\).*/\1/p' <<<"$out")
  BARE_S=$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' <<<"$out")
}

# Starts an embedded `run` on the SQLite file $1 and offers it the generated events of the
# further arguments through POST /ingest at $rate/s ($batch-line bodies, $in_flight in flight; the
# caller's locals), timed to the last 202: sets POST_S (seconds). The run is left up.
embedded_post_ingest() {
  local db=$1 t0
  shift
  start_embedded "$db"
  log "POST /ingest: $n events offered at $rate/s, $batch-line bodies, $in_flight in flight"
  t0=$(now)
  "$GEN" generate --rate "$rate" "$@" --to "$URL" --batch "$batch" --in-flight "$in_flight" \
    2>"$WORK/generate.log" || { tail -n 5 "$WORK/generate.log" >&2; die "generate --to $URL failed"; }
  POST_S=$(secs "$t0" "$(now)")
  tail -n 1 "$WORK/generate.log" >&2
}

# Whether an embedded ingest rate $1 with ratio $2 to its baseline meets #15's target.
target_ok() { awk -v r="$1" -v v="$2" 'BEGIN { print (r >= 100000 && v != "n/a" && v >= 0.8) ? "met" : "missed" }'; }

bench_embedded() {
  prepare_build
  command -v wrk >/dev/null || { log "installing wrk"; apt-get install -y -qq wrk >/dev/null; }
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  local n rate batch in_flight rss_rate rss_total every duration
  if [ "$QUICK" = 1 ]; then
    n="${BENCH_EMBEDDED_EVENTS:-20000}" rate="${BENCH_EMBEDDED_RATE:-5000}" batch=1000 in_flight=4
    rss_rate="${BENCH_EMBEDDED_RSS_RATE:-2000}" rss_total=20 every=5 duration=2s
  else
    n="${BENCH_EMBEDDED_EVENTS:-1000000}" rate="${BENCH_EMBEDDED_RATE:-150000}" batch=5000 in_flight=8
    rss_rate="${BENCH_EMBEDDED_RSS_RATE:-10000}" rss_total="${BENCH_EMBEDDED_RSS_SECONDS:-600}" every=10 duration=10s
  fi
  # BATCH_MAX_EVENTS (exported) reaches the embedded `run` too: the events per write transaction
  # under backlog, recorded with the other overrides.
  # Lines in flight (batch × in flight) must commit within the intake's queue timeout (5 s), or
  # the server answers 503 and the generator gives up after its retries: a slower build needs less.
  batch="${BENCH_EMBEDDED_BATCH:-$batch}" in_flight="${BENCH_EMBEDDED_IN_FLIGHT:-$in_flight}"
  # Spread over the last hour by default (every event up to an hour late, in random order): the 1 h
  # window then holds every row, in memory and in SQLite. BENCH_EMBEDDED_LATE_RATIO=0 sends times in
  # arrival order. The baseline inserts the very same rows (the same seed and late-time arguments),
  # in the same order, so both sides pay for the same out-of-order `ts` index inserts.
  local late_ratio="${BENCH_EMBEDDED_LATE_RATIO:-1}" late_max="${BENCH_EMBEDDED_LATE_MAX:-1h}"
  local events=(--count "$n" --seed 21 --late-ratio "$late_ratio" --late-max "$late_max")
  local late_text="every event up to $late_max late, in random order"
  [ "$late_ratio" = 1 ] || late_text="a share of $late_ratio of the events up to $late_max late, the rest in arrival order"
  [ "$late_ratio" = 0 ] && late_text="times in arrival order (none late)"

  # 0. Times in arrival order (what most logs look like), when the main run sends them late: the
  # same count through POST /ingest and its own baseline, the same rows in one transaction.
  local ord_rate=n/a ord_s=n/a ord_base_rate=n/a ord_base_s=n/a
  if [ "$late_ratio" != 0 ] && [ -f examples/sqlite_bulk_baseline.rs ]; then
    local in_order=(--count "$n" --seed 21 --late-ratio 0)
    "$GEN" generate --rate 0 "${in_order[@]}" --to ndjson:"$WORK/rows.ndjson" 2>/dev/null
    log "in arrival order: the baseline, $n rows in one transaction"
    embedded_bare_insert "$WORK/rows.ndjson" "$n"
    ord_base_rate=$BARE_RATE ord_base_s=$BARE_S
    rm -f "$WORK/rows.ndjson"
    log "in arrival order:"
    embedded_post_ingest "$WORK/ordered.db" "${in_order[@]}"
    ord_s=$POST_S
    ord_rate=$(rate "$n" "$ord_s")
    stored=$(sqlite_count "$WORK/ordered.db" "SELECT count(*) FROM logs")
    [ "$stored" = "$n" ] || die "logs holds $stored rows after every 202 (in arrival order), expected $n"
    stop_run
    rm -f "$WORK"/ordered.db*
  fi

  # 1. Baseline: the same rows into a bare SQLite file in one transaction.
  "$GEN" generate --rate 0 "${events[@]}" --to ndjson:"$WORK/rows.ndjson" 2>/dev/null
  local base_rate=n/a base_s=n/a kw_rate=n/a kw_s=n/a
  if [ -f examples/sqlite_bulk_baseline.rs ]; then
    log "baseline: examples/sqlite_bulk_baseline, $n rows ($(($(stat -c %s "$WORK/rows.ndjson") / 1048576)) MiB NDJSON) in one transaction"
    embedded_bare_insert "$WORK/rows.ndjson" "$n"
    base_rate=$BARE_RATE base_s=$BARE_S
    # Not the target's baseline: the same bulk insert with the keyword index the embedded store also
    # keeps (per-second token counts), to show what that index costs apart from any batching.
    log "baseline with the keyword index (--keywords), one transaction"
    embedded_bare_insert "$WORK/rows.ndjson" "$n" --keywords
    kw_rate=$BARE_RATE kw_s=$BARE_S
  else
    log "examples/sqlite_bulk_baseline.rs is missing: no baseline this run"
  fi
  rm -f "$WORK/rows.ndjson"

  # 2. POST /ingest at a fixed offered rate: the generator paces itself whatever the answers (open
  # loop, up to --in-flight requests waiting); it exits once every event is acknowledged, and a 202
  # means committed to SQLite.
  local ingest_s ingest_rate stored
  embedded_post_ingest "$WORK/embedded.db" "${events[@]}"
  ingest_s=$POST_S
  ingest_rate=$(rate "$n" "$ingest_s")
  # The keyword indexer counts behind the writer (a 202 does not wait for it): how far behind it
  # is at the last 202, and how long it then takes to count the rest (answers are exact meanwhile,
  # counting the rows it has not reached from their tokens, but slower).
  local lag_end catch_t0 catch_s indexed_rate
  lag_end=$(index_lag "$WORK/embedded.db")
  catch_t0=$(now)
  local catch_deadline=$((SECONDS + 900))
  until [ "$(index_lag "$WORK/embedded.db")" = 0 ]; do
    [ "$SECONDS" -lt "$catch_deadline" ] || die "the keyword indexer did not catch up within 900 s"
    sleep 0.1
  done
  catch_s=$(secs "$catch_t0" "$(now)")
  indexed_rate=$(rate "$n" "$(awk -v a="$ingest_s" -v b="$catch_s" 'BEGIN { printf "%.3f", a + b }')")
  log "keyword indexer: $lag_end rows behind at the last 202, caught up $catch_s s later"
  stored=$(sqlite_count "$WORK/embedded.db" "SELECT count(*) FROM logs")
  [ "$stored" = "$n" ] || die "logs holds $stored rows after every 202, expected $n"

  # 3. The 1 h window from memory against the same question as SQL over the same rows.
  local at m_total s_total
  at=$(date +%s)
  m_total=$(json_field "$URL/stats/errors?window=1h&at=$at&source=memory" total)
  s_total=$(json_field "$URL/stats/errors?window=1h&at=$at&source=sqlite" total)
  [ "$m_total" = "$s_total" ] || die "the 1 h window differs: memory $m_total, sqlite $s_total"
  log "1 h window (at=$at): $m_total events from both sources; wrk $duration on each"
  local m_rps m_p50 m_p99 m_bad s_rps s_p50 s_p99 s_bad
  read -r m_rps m_p50 m_p99 m_bad < <(load 2 8 "$duration" "$URL/stats/errors?window=1h&source=memory")
  read -r s_rps s_p50 s_p99 s_bad < <(load 1 2 "$duration" "$URL/stats/errors?window=1h&source=sqlite")
  [ "$m_bad$s_bad" = 00 ] || log "WARNING: non-2xx answers (counted in the figures): memory $m_bad, sqlite $s_bad"
  # An SQL answer slower than wrk's run is never counted by it: each of 3 also timed alone, the median kept.
  local s_one
  s_one=$(for _ in 1 2 3; do
    curl -s -o /dev/null -m 120 -w '%{time_total}\n' "$URL/stats/errors?window=1h&at=$at&source=sqlite"
  done | sort -n | awk 'NR == 2 { printf "%.1f", $1 * 1000 }')
  stop_run
  rm -f "$WORK"/embedded.db*

  # 4. RSS at a steady rate on a fresh file; a horizon shorter than the run lets the second half
  # show whether anything but the windows grows.
  local horizon="${BENCH_HORIZON:-5m}"
  WINDOW_HORIZON="$horizon" start_embedded "$WORK/rss.db"
  log "RSS: VmRSS of pid $RUN_PID every $every s for $rss_total s at $rss_rate events/s (POST /ingest)"
  "$GEN" generate --rate "$rss_rate" --duration "${rss_total}s" --seed 22 --to "$URL" 2>"$WORK/rss-generate.log" &
  local gen_pid=$!
  : >"$WORK/rss"
  local t_start=$SECONDS t
  for ((t = 0; t <= rss_total; t += every)); do
    while [ $((SECONDS - t_start)) -lt "$t" ]; do sleep 0.2; done
    kill -0 "$RUN_PID" 2>/dev/null || { tail -n 20 "$WORK/embedded.log" >&2; die "run exited during the RSS run"; }
    echo "$t $(awk '/^VmRSS:/ {print $2}' "/proc/$RUN_PID/status")" >>"$WORK/rss"
    log "  ${t}s: $(tail -n 1 "$WORK/rss" | awk '{printf "%.1f MiB", $2 / 1024}')"
  done
  wait "$gen_pid" || { tail -n 5 "$WORK/rss-generate.log" >&2; die "the RSS run's generator failed"; }
  local rss_rows rss_achieved
  rss_rows=$(sqlite_count "$WORK/rss.db" "SELECT count(*) FROM logs")
  # What the server took, which is below the offered rate when it cannot keep up.
  rss_achieved=$(rate "$rss_rows" "$rss_total")
  stop_run
  rm -f "$WORK"/rss.db*
  local start end max slope slope2 verdict
  read -r start end max slope slope2 verdict < <(rss_stats "$WORK/rss" "$rss_total")

  local vs_base rps_ratio lat_ratio ingest_ok query_ok
  vs_base=n/a
  [ "$base_rate" = n/a ] || vs_base=$(ratio "$ingest_rate" "$base_rate")
  rps_ratio=$(awk -v a="$m_rps" -v b="$s_rps" 'BEGIN { if (b > 0) printf "%.0f", a / b; else print "n/a" }')
  lat_ratio=$(awk -v a="$s_p50" -v b="$m_p50" 'BEGIN { if (b > 0) printf "%.0f", a / b; else print "n/a" }')
  ingest_ok=$(target_ok "$ingest_rate" "$vs_base")
  local ord_vs_base=n/a ord_ok=n/a
  if [ "$ord_rate" != n/a ]; then
    ord_vs_base=$(ratio "$ord_rate" "$ord_base_rate")
    ord_ok=$(target_ok "$ord_rate" "$ord_vs_base")
  fi
  local one_ratio
  one_ratio=$(awk -v a="$s_one" -v b="$m_p50" 'BEGIN { if (b > 0) printf "%.0f", a / b; else print "n/a" }')
  query_ok=$(awk -v r="$rps_ratio" -v o="$one_ratio" \
    'BEGIN { print ((r != "n/a" && r >= 1000) || (r == "n/a" && o != "n/a" && o >= 1000)) ? "met" : "missed" }')
  [ "$QUICK" = 0 ] || log "--quick: sizes too small and the build unoptimised, so the targets are not judged by this run"
  printf '\n%-46s %12s %10s\n' "embedded ingest, $n events ($late_text)" "events/s" "seconds"
  printf '%-46s %12s %10s\n' "POST /ingest at $rate/s offered, committed" "$ingest_rate" "$ingest_s"
  printf '%-46s %12s %10s\n' "bare SQLite bulk insert, one tx, same rows (baseline)" "$base_rate" "$base_s"
  printf '%-46s %12s   target >= 100000 and >= 0.8: %s\n' "ratio ingest / baseline" "$vs_base" "$ingest_ok"
  printf '%-46s %12s %10s\n' "bare insert + keyword index, one tx (not the target's)" "$kw_rate" "$kw_s"
  printf '%-46s %12s\n' "keyword indexer behind at the last 202 (rows)" "$lag_end"
  printf '%-46s %12s %10s\n' "  caught up after the last 202 (s); to indexed" "$indexed_rate" "$catch_s"
  if [ "$ord_rate" != n/a ]; then
    printf '%-46s %12s %10s\n' "in arrival order: POST /ingest, committed" "$ord_rate" "$ord_s"
    printf '%-46s %12s %10s\n' "in arrival order: bare insert (its baseline)" "$ord_base_rate" "$ord_base_s"
    printf '%-46s %12s   target >= 100000 and >= 0.8: %s\n' "in arrival order: ratio" "$ord_vs_base" "$ord_ok"
  fi
  printf '\n%-46s %10s %10s %10s\n' "1 h window over $n rows" "req/s" "p50 ms" "p99 ms"
  printf '%-46s %10s %10s %10s %8s\n' "memory" "$m_rps" "$m_p50" "$m_p99" "non-2xx $m_bad"
  printf '%-46s %10s %10s %10s %8s\n' "SQL over the same rows (source=sqlite)" "$s_rps" "$s_p50" "$s_p99" "non-2xx $s_bad"
  printf '%-46s %10s %10s\n' "one SQL answer timed alone (median of 3)" "" "$s_one"
  printf '%-46s %10s %10s   target >= 1000x: %s\n' "ratio memory / SQL (req/s; p50 latency)" "${rps_ratio}x" "${lat_ratio}x" "$query_ok"
  printf '%-46s %10s %10s\n' "ratio SQL alone / memory p50" "" "${one_ratio}x"
  printf '\n%-46s %10s\n' "RSS of embedded run, $rss_rate/s offered, $rss_total s" MiB
  printf '%-46s %10s\n' "events/s stored (rows / seconds)" "$rss_achieved"
  printf '%-46s %10s\n' "first sample (baseline)" "$start"
  printf '%-46s %10s\n' "last" "$end"
  printf '%-46s %10s\n' "max" "$max"
  printf '%-46s %10s\n' "slope, whole run (MiB/min)" "$slope"
  printf '%-46s %10s\n' "slope, second half (MiB/min)" "$slope2"
  printf '%-46s %10s\n' "verdict" "$verdict"
  {
    echo
    echo "## embedded — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "- machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr); $(rustc --version); SQLite (bundled, libsqlite3-sys $(grep -A1 '^name = "libsqlite3-sys"' Cargo.lock | sed -n 's/version = "\(.*\)"/\1/p')), WAL, \`$PROFILE\` build"
    local overrides=""
    for v in BENCH_PROFILE BENCH_EMBEDDED_EVENTS BENCH_EMBEDDED_RATE BENCH_EMBEDDED_BATCH BENCH_EMBEDDED_IN_FLIGHT BENCH_EMBEDDED_LATE_RATIO BENCH_EMBEDDED_LATE_MAX BENCH_EMBEDDED_RSS_RATE BENCH_EMBEDDED_RSS_SECONDS BENCH_HORIZON BATCH_MAX_EVENTS; do
      [ -z "${!v:-}" ] || overrides+="$v=${!v} "
    done
    echo "- \`${overrides}scripts/bench.sh $BENCH_CMD\`: one \`log-analyzer run\` in the embedded mode (no Kafka, PostgreSQL or Redis); the generator on the same machine"
    echo "- load average (1, 5, 15 min) when the measurements began: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared)"
    [ "$PROFILE" = release ] || echo "- **$PROFILE build** (BENCH_PROFILE=$PROFILE): throughput and latency figures are far below a release build's and do not judge the targets; RSS flatness does not depend on it"
    echo
    echo "Ingest: $n generated events (seed 21; event times: $late_text, \`--late-ratio $late_ratio --late-max $late_max\`) offered at $rate/s (open loop) to POST /ingest in $batch-line bodies, $in_flight in flight; the clock stops when the generator has every 202 (each means committed to SQLite). Baseline: \`examples/sqlite_bulk_baseline\` inserting the same rows (the same times, in the same order) into a bare SQLite file in one transaction."
    echo
    echo "| path | events/s | seconds |"
    echo "|---|---:|---:|"
    echo "| POST /ingest, committed | $ingest_rate | $ingest_s |"
    echo "| bare SQLite bulk insert, one transaction (baseline) | $base_rate | $base_s |"
    echo "| ratio | $vs_base | |"
    echo "| for comparison, not the target's baseline: the bare insert with the keyword index (\`--keywords\`: per-second token counts), one transaction | $kw_rate | $kw_s |"
    echo "| the keyword indexer behind the writer: first event to the last row indexed ($lag_end rows behind at the last 202, caught up $catch_s s after it) | $indexed_rate | $(awk -v a="$ingest_s" -v b="$catch_s" 'BEGIN { printf "%.2f", a + b }') |"
    echo
    echo "Target ≥ 100,000 events/s and ≥ 0.8 × the baseline: **$ingest_ok**."
    if [ "$ord_rate" != n/a ]; then
      echo
      echo "The same count with times in arrival order (\`--late-ratio 0\`, what most logs look like: \`logs_ts\` then takes appends), on a fresh file, against its own baseline (those rows, in that order, one transaction):"
      echo
      echo "| path, times in arrival order | events/s | seconds |"
      echo "|---|---:|---:|"
      echo "| POST /ingest, committed | $ord_rate | $ord_s |"
      echo "| bare SQLite bulk insert, one transaction (baseline) | $ord_base_rate | $ord_base_s |"
      echo "| ratio | $ord_vs_base | |"
      echo
      echo "Target in arrival order: **$ord_ok**."
    fi
    echo
    echo "The 1 h window (\`GET /stats/errors?window=1h\`) over those $n rows, wrk $duration each (memory: 2 threads, 8 connections; SQL: 1 thread, 2 connections); both answered $m_total events for the same \`at\`:"
    echo
    echo "| source | req/s | p50 ms | p99 ms | non-2xx |"
    echo "|---|---:|---:|---:|---:|"
    echo "| memory | $m_rps | $m_p50 | $m_p99 | $m_bad |"
    echo "| SQL over the same rows (\`source=sqlite\`, baseline) | $s_rps | $s_p50 | $s_p99 | $s_bad |"
    echo "| one SQL answer timed alone (median of 3, curl) | | $s_one | | |"
    echo "| ratio memory / SQL | ${rps_ratio}x (req/s) | ${lat_ratio}x (p50); ${one_ratio}x (alone) | | |"
    echo
    echo "Target ≥ 1000×: **$query_ok**."
    echo
    echo "RSS: VmRSS of a fresh embedded \`run\` (WINDOW_HORIZON=$horizon) every $every s for $rss_total s while \`generate --rate $rss_rate --to http://…\` posts to it; $rss_rows rows stored ($rss_achieved events/s)."
    echo
    echo "| RSS | MiB |"
    echo "|---|---:|"
    echo "| first sample (baseline) | $start |"
    echo "| last | $end |"
    echo "| max | $max |"
    echo "| slope, whole run | $slope MiB/min |"
    echo "| slope, second half | $slope2 MiB/min |"
    echo
    echo "Verdict: **$verdict** (flat = the second half's slope over the whole run adds under 5 % of the first sample)."
    echo
    echo "Samples (seconds, MiB): $(awk '{printf "%s%d %.1f", (NR > 1 ? "; " : ""), $1, $2 / 1024}' "$WORK/rss")."
  } | record
}

bench_all() {
  local started=$SECONDS
  bench_ingest
  bench_ingest_http
  bench_query
  bench_freshness
  bench_memory
  bench_embedded
  bench_protocols
  bench_recovery
  bench_scale
  bench_openloop
  bench_ingest2
  bench_cardinality
  bench_search
  bench_dashboard
  bench_tail
  # The Flink peer runs inside bench_ingest, on the same topic, when it builds (BENCH_PEER=0: never).
  log "all benchmarks done in $((SECONDS - started)) s"
}

# shellcheck source=scripts/bench-protocols.sh
source "$ROOT/scripts/bench-protocols.sh"
# shellcheck source=scripts/bench-scale.sh
source "$ROOT/scripts/bench-scale.sh"
# shellcheck source=scripts/bench-openloop.sh
source "$ROOT/scripts/bench-openloop.sh"
# shellcheck source=scripts/bench-ingest.sh
source "$ROOT/scripts/bench-ingest.sh"
# shellcheck source=scripts/bench-cardinality.sh
source "$ROOT/scripts/bench-cardinality.sh"
# shellcheck source=scripts/bench-search.sh
source "$ROOT/scripts/bench-search.sh"
# shellcheck source=scripts/bench-dashboard.sh
source "$ROOT/scripts/bench-dashboard.sh"
# shellcheck source=scripts/bench-tail.sh
source "$ROOT/scripts/bench-tail.sh"

PEER=auto
[ "${BENCH_PEER:-1}" = 0 ] && PEER=off
BENCH_CMD="$*"
case "${1:-}" in
ingest) bench_ingest ;;
ingest-http) bench_ingest_http ;;
peer) PEER=required bench_ingest ;;
query) bench_query ;;
freshness) bench_freshness ;;
memory) bench_memory ;;
embedded) bench_embedded ;;
protocols) bench_protocols ;;
recovery) bench_recovery ;;
scale) bench_scale ;;
openloop) bench_openloop ;;
ingest2) bench_ingest2 ;;
cardinality) bench_cardinality ;;
search) bench_search ;;
dashboard) bench_dashboard ;;
tail) bench_tail ;;
all) bench_all ;;
*)
  echo "usage: $0 ingest|ingest-http|peer|query|freshness|memory|embedded|protocols|recovery|scale|openloop|ingest2|cardinality|search|dashboard|tail|all [--quick]" >&2
  exit 2
  ;;
esac
