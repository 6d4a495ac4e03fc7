#!/usr/bin/env bash
# Benchmarks, each with its baseline measured in the same run on the same machine.
#
#   scripts/bench.sh ingest [--quick]   events/s of `log-analyzer ingest` from pre-produced events to
#                                       zero lag, vs psql COPY of the same rows into an identical table
#   scripts/bench.sh peer [--quick]     the same as ingest, with the Apache Flink peer required: Flink
#                                       SQL in a local mini-cluster (bench/peers/flink) stores the same
#                                       pre-produced events through its JDBC sink and computes the
#                                       10-second error counts per service as a windowed query, checked
#                                       against SQL over log-analyzer's stored rows (`ingest` runs the
#                                       peer too when it builds; BENCH_PEER=0 skips it)
#   scripts/bench.sh query [--quick]    /stats/errors latency (wrk) for 10s, 5m and 1h windows from the
#                                       `run` process while it ingests at BENCH_RATE, with an hour of
#                                       history in PostgreSQL, vs the same answers computed by SQL;
#                                       then produce→visible latency through POST /ingest
#
# Figures are printed and appended to docs/BENCHMARKS.md (not with --quick, which only proves the
# harness works end to end with tiny sizes and a debug build; BENCH_PROFILE=release reuses the release build).
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
  trap 'cp "$WORK"/*.log /tmp/ 2>/dev/null; rm -rf "$WORK"; [ -n "${INGEST_PID:-}" ] && kill "$INGEST_PID" 2>/dev/null; [ -n "${PEER_PID:-}" ] && kill "$PEER_PID" 2>/dev/null || true' EXIT
  ADMIN_URL="$DATABASE_URL"
  DB="la_bench_$RUN_ID"
  psql -X -q "$ADMIN_URL" -c "CREATE DATABASE $DB"
  export DATABASE_URL="${ADMIN_URL%/*}/$DB"
  export KAFKA_TOPIC="bench_$RUN_ID" KAFKA_GROUP="bench_$RUN_ID" KAFKA_PARTITIONS="$PARTITIONS"
  export LOG_FORMAT=json LOG_LEVEL=warn ADMIN_ADDR=127.0.0.1:0
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
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
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
  LA_CPU=$(cpu_secs "$INGEST_PID")
  kill -TERM "$INGEST_PID"
  wait "$INGEST_PID" || true
  INGEST_PID=
  local ingest_s rows
  ingest_s=$(secs "$t0" "$t1")
  rows=$(psql -X -qtA "$DATABASE_URL" -c "SELECT count(*) FROM logs")
  [ "$rows" = "$EVENTS" ] || { log "ERROR: logs holds $rows rows, expected $EVENTS"; exit 1; }

  local ingest_rate copy_rate ratio ingest_span
  ingest_rate=$(rate "$EVENTS" "$ingest_s")
  copy_rate=$(rate "$EVENTS" "$copy_s")
  ratio=$(awk -v a="$ingest_rate" -v b="$copy_rate" 'BEGIN { printf "%.2f", a / b }')
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
  if [ "$QUICK" = 0 ]; then
    record_ingest "$ingest_rate" "$ingest_s" "$copy_rate" "$copy_s" "$ratio"
  fi
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
  local la_rate="$1" la_s="$2" la_span="$3" copy_rate="$4"
  # DATABASE_URL (postgres://user[:password]@host:port/db) as a JDBC URL for the bench database.
  local rest="${DATABASE_URL#*://}" userinfo="" hostport
  case "$rest" in *@*) userinfo="${rest%%@*}" rest="${rest#*@}" ;; esac
  hostport="${rest%%/*}"
  local jdbc="jdbc:postgresql://$hostport/$DB?reWriteBatchedInserts=true&stringtype=unspecified"
  [ -z "$userinfo" ] || jdbc+="&user=${userinfo%%:*}"
  case "$userinfo" in *:*) jdbc+="&password=${userinfo#*:}" ;; esac
  local java_opts=(-Xms512m -Xmx1g -XX:+UseG1GC)
  # The same shape as logs (partitioned by day, BRIN on ts). The JDBC sink's PostgreSQL dialect does
  # not quote column names, and "partition"/"offset" are reserved words: it inserts through a view.
  psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" <<'SQL'
CREATE TABLE logs_flink (LIKE logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (ts);
CREATE INDEX ON logs_flink USING brin (ts);
DO $$
DECLARE d date;
BEGIN
  FOR d IN SELECT generate_series(current_date - 2, current_date + 1, interval '1 day')::date LOOP
    EXECUTE format('CREATE TABLE logs_flink_%s PARTITION OF logs_flink FOR VALUES FROM (%L) TO (%L)',
                   to_char(d, 'YYYYMMDD'), d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
  END LOOP;
END $$;
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
    echo "- $EVENTS events (~250 B JSON each) pre-produced to $PARTITIONS partitions; \`scripts/bench.sh $BENCH_CMD\`"
    [ -z "$PEER_ROWS" ] || echo "- peer: $(peer_versions)"
    echo "- load average (1, 5, 15 min) when the measurements began: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared)"
    echo
    echo "| path | events/s | seconds |"
    echo "|---|---:|---:|"
    echo "| log-analyzer ingest, start to zero lag | $1 | $2 |"
    echo "| psql \`COPY\` of the same rows (baseline) | $3 | $4 |"
    echo "| ratio | $5 | |"
    [ -z "$PEER_ROWS" ] || printf '%s\n' "$PEER_ROWS"
    [ -z "$PEER_NOTE" ] || { echo; echo "$PEER_NOTE"; }
  } >>"$file"
  log "appended to $file"
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
  "$BIN" generate --rate 0 --count "$history" --seed 3 --late-ratio 1 --late-max "${history_s}s" \
    --to csv:"$WORK/history.csv" 2>/dev/null
  # Rows reach the table in time order in production (ingest follows the stream), which is what
  # keeps its BRIN index on ts useful: load the history the same way.
  sort -S 1G -o "$WORK/history.csv" "$WORK/history.csv"
  psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" \
    -c "\\copy logs (ts, level, service, user_id, message, tokens, attrs, topic, \"partition\", \"offset\") FROM '$WORK/history.csv' CSV"
  psql -X -q "$DATABASE_URL" -c "ANALYZE logs"
  rm -f "$WORK/history.csv"
  local port admin
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  admin=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  log "log-analyzer run --generate $rate (ingesting while measured)"
  HTTP_ADDR="127.0.0.1:$port" ADMIN_ADDR="127.0.0.1:$admin" DATABASE_TIMEOUT_MS=120000 REDIS_PREFIX="bench_$RUN_ID" \
    "$BIN" run --generate "$rate" 2>"$WORK/run.log" &
  INGEST_PID=$!
  local url="http://127.0.0.1:$port" ready=0
  for _ in $(seq 600); do
    if curl -fs "$url/readyz" 2>/dev/null | grep -q '"memory":"ready"'; then ready=1; break; fi
    kill -0 "$INGEST_PID" 2>/dev/null || break
    sleep 0.2
  done
  [ "$ready" = 1 ] || { tail -n 20 "$WORK/run.log" >&2; log "ERROR: run never became ready"; exit 1; }
  sleep 2

  # Memory first, then freshness, then SQL: long SQL scans would otherwise steal the CPU from both.
  declare -A m_rps m_p50 m_p99
  for w in 10s 5m 1h; do
    read -r m_rps[$w] m_p50[$w] m_p99[$w] _ < <(load 2 8 "$duration" "$url/stats/errors?window=$w")
  done

  log "freshness: $probes probes through POST /ingest, polled until visible"
  local lat=()
  for i in $(seq "$probes"); do
    local svc="probe-$RUN_ID-$i" t0 t1 ts
    ts=$(date +%s%3N)
    t0=$(date +%s%N)
    curl -fs -X POST --data-binary "{\"level\":\"error\",\"service\":\"$svc\",\"message\":\"probe\",\"ts\":$ts}" "$url/ingest" >/dev/null
    local at=$((ts / 1000 + 1))
    until curl -fs "$url/stats/errors?window=10s&service=$svc&at=$at" | grep -q '"total":1'; do :; done
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
  kill -TERM "$INGEST_PID"
  wait "$INGEST_PID" || true
  INGEST_PID=
  cleanup_db
  if [ "$QUICK" = 0 ]; then
    local file=docs/BENCHMARKS.md
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
    } >>"$file"
    log "appended to $file"
  fi
}

PEER=auto
[ "${BENCH_PEER:-1}" = 0 ] && PEER=off
BENCH_CMD="$*"
case "${1:-}" in
ingest) bench_ingest ;;
peer) PEER=required bench_ingest ;;
query) bench_query ;;
*)
  echo "usage: $0 ingest|peer|query [--quick]" >&2
  exit 2
  ;;
esac
