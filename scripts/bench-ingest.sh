# shellcheck shell=bash
# `scripts/bench.sh ingest2`: Kafka → PostgreSQL ingest against its baselines, all in one run on the
# same pre-produced events (BENCH_EVENTS, default 2,000,000; --quick: 20,000). Sourced by
# scripts/bench.sh (its helpers: setup, logs_like, logs_like_indexed, cpu_secs, commit_span, log, die, now, secs, rate,
# ratio, machine, record, and GEN, BIN, WORK, EVENTS, PARTITIONS, QUICK).
#
# In order:
#   1. psql COPY of the same rows (CSV) into a table shaped like `logs`, with every index `logs` has
#      (the same index inserts the ingest pays) — before the ingests;
#   2. `log-analyzer ingest`, start to zero lag, MAILBOX_METRICS=on (instrumented, the default);
#   3. the same binary with MAILBOX_METRICS=off (bare): the instrumentation's cost is the difference;
#   4. the floor a user can script in minutes: `kcat -C … | psql -c "COPY …"` of the raw JSON values
#      into a one-jsonb-column table (no field resolution, no exactly-once, no dead letters);
#   5. psql COPY again — after the ingests; the faster of 1 and 5 is the baseline (the machine is
#      shared, so one COPY alone may land in someone else's busy second); then, for comparison, a
#      COPY into a table with only a BRIN on ts (the baseline before the search indexes existed);
#   6. a profile of one more (bare) ingest with `perf record` when perf is installed and allowed
#      (BENCH_PROFILE_INGEST=0 skips it): the top symbols, and the share of allocation and memmove.
# Each ingest starts from an empty `logs` and no stored offsets, so each reads every event again.

ingest2_count() { psql -X -qtA "$DATABASE_URL" -c "SELECT COALESCE(sum(next_offset), 0) FROM kafka_offsets WHERE topic = '$KAFKA_TOPIC'"; }

# Forgets what an ingest stored, so the next one starts from offset 0 of every partition.
ingest2_reset() {
  psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" \
    -c "TRUNCATE logs, log_rejects" -c "DELETE FROM kafka_offsets WHERE topic = '$KAFKA_TOPIC'"
}

# Runs `ingest` with MAILBOX_METRICS=$2 until every event is stored; sets INGEST_S (wall seconds from
# start to zero lag), INGEST_CPU (its CPU seconds) and INGEST_SPAN (first to last commit). $3, if
# set, is a command prefix (the profiler).
ingest2_run() {
  local label=$1 metrics=$2 prefix=${3:-}
  ingest2_reset
  log "log-analyzer ingest ($label, MAILBOX_METRICS=$metrics): from start to zero lag"
  local t0 t1 stored=0 pid
  t0=$(now)
  # shellcheck disable=SC2086
  MAILBOX_METRICS=$metrics KAFKA_GROUP="${KAFKA_GROUP}_$label" $prefix "$BIN" ingest 2>"$WORK/ingest-$label.log" &
  RUN_PID=$!
  pid=$RUN_PID
  while [ "$stored" -lt "$EVENTS" ]; do
    sleep 0.1
    stored=$(ingest2_count)
    kill -0 "$RUN_PID" 2>/dev/null || { tail -n 20 "$WORK/ingest-$label.log" >&2; die "ingest ($label) exited"; }
  done
  t1=$(now)
  # Under perf the ingest is perf's child: its CPU is read from the child.
  [ -z "$prefix" ] || pid=$(pgrep -P "$RUN_PID" -n || echo "$RUN_PID")
  INGEST_CPU=$(cpu_secs "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  wait "$RUN_PID" || true
  RUN_PID=
  INGEST_S=$(secs "$t0" "$t1")
  INGEST_SPAN=$(commit_span logs)
  local rows
  rows=$(psql -X -qtA "$DATABASE_URL" -c "SELECT count(*) FROM logs")
  [ "$rows" = "$EVENTS" ] || die "ingest ($label): logs holds $rows rows, expected $EVENTS"
}

# Times one psql COPY of the CSV rows into table $1 (default logs_copy, emptied first); prints the seconds.
ingest2_copy() {
  local table="${1:-logs_copy}"
  psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "TRUNCATE $table"
  local t0 t1
  t0=$(now)
  psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" \
    -c "\\copy $table (ts, level, service, user_id, message, tokens, attrs, topic, \"partition\", \"offset\") FROM '$WORK/rows.csv' CSV"
  t1=$(now)
  secs "$t0" "$t1"
}

# kcat from PATH, else scripts/tools.sh installs it (from the distribution).
ingest2_kcat() {
  command -v kcat >/dev/null || scripts/tools.sh >&2 || die "scripts/tools.sh could not install kcat"
  command -v kcat >/dev/null || die "kcat is not installed"
}

bench_ingest2() {
  setup
  ingest2_kcat
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  log "pre-producing $EVENTS events to $KAFKA_TOPIC ($PARTITIONS partitions)"
  "$GEN" generate --rate 0 --count "$EVENTS" --seed 7 --to kafka 2>"$WORK/produce.log" || {
    cat "$WORK/produce.log" >&2
    exit 1
  }
  "$GEN" generate --rate 0 --count "$EVENTS" --seed 7 --to csv:"$WORK/rows.csv" 2>/dev/null
  local bytes
  bytes=$(stat -c %s "$WORK/rows.csv")
  logs_like_indexed logs_copy
  logs_like logs_copy_brin

  log "baseline: psql COPY of $EVENTS rows ($((bytes / 1048576)) MiB CSV) into a table with logs' indexes, before the ingests"
  local copy_before copy_after copy_s
  copy_before=$(ingest2_copy)

  ingest2_run instrumented on
  local on_s=$INGEST_S on_cpu=$INGEST_CPU on_span=$INGEST_SPAN
  ingest2_run bare off
  local off_s=$INGEST_S off_cpu=$INGEST_CPU off_span=$INGEST_SPAN

  # The scripted floor: the raw values into jsonb. CSV with quote and delimiter bytes that JSON
  # never holds unescaped, so every line is one field, taken as is.
  log "floor: kcat -C | psql COPY of the raw JSON values"
  psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "CREATE TABLE logs_kcat (doc jsonb NOT NULL)"
  local t0 t1 kcat_s kcat_rows
  t0=$(now)
  kcat -C -q -e -b "$KAFKA_BROKERS" -t "$KAFKA_TOPIC" -o beginning -f '%s\n' |
    psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" \
      -c "COPY logs_kcat (doc) FROM STDIN WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"
  t1=$(now)
  kcat_s=$(secs "$t0" "$t1")
  kcat_rows=$(psql -X -qtA "$DATABASE_URL" -c "SELECT count(*) FROM logs_kcat")
  [ "$kcat_rows" = "$EVENTS" ] || die "kcat | psql stored $kcat_rows rows, expected $EVENTS"

  log "baseline: psql COPY again, after the ingests"
  copy_after=$(ingest2_copy)
  copy_s=$(awk -v a="$copy_before" -v b="$copy_after" 'BEGIN { print (a < b ? a : b) }')
  # For comparison: the same COPY into a table with only the BRIN on ts (the baseline before the
  # search indexes of 2026-12-01 existed; the runs before this one were measured against it).
  log "comparison: psql COPY into a table with only a BRIN on ts"
  local brin_s
  brin_s=$(ingest2_copy logs_copy_brin)

  local profile="" perf_note=""
  if [ "${BENCH_PROFILE_INGEST:-1}" = 0 ]; then
    perf_note="profile skipped (BENCH_PROFILE_INGEST=0)"
  elif ! command -v perf >/dev/null; then
    perf_note="profile skipped: perf is not installed (Debian: linux-perf)"
  elif ! perf record -e cpu-clock -o "$WORK/probe.data" -- true >/dev/null 2>&1; then
    perf_note="profile skipped: perf record is not allowed here (kernel.perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid))"
  else
    ingest2_run profiled off "perf record -e cpu-clock -F 499 -o $WORK/perf.data --"
    profile=$(perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio --percent-limit 0.8 2>/dev/null |
      grep -E '^ +[0-9.]+%' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' | head -n 25)
    local alloc memmove
    alloc=$(perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio 2>/dev/null |
      grep -E '^ +[0-9.]+%' | grep -Ei 'malloc|free|realloc|mi_|alloc' | awk '{ s += $1 } END { printf "%.1f", s }')
    memmove=$(perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio 2>/dev/null |
      grep -E '^ +[0-9.]+%' | grep -Ei 'memmove|memcpy' | awk '{ s += $1 } END { printf "%.1f", s }')
    perf_note="profile (perf, cpu-clock at 499 Hz, a bare ingest): allocation ${alloc} %, memmove/memcpy ${memmove} % of samples"
  fi
  cleanup_db

  local on_rate off_rate copy_rate kcat_rate
  on_rate=$(rate "$EVENTS" "$on_s")
  off_rate=$(rate "$EVENTS" "$off_s")
  copy_rate=$(rate "$EVENTS" "$copy_s")
  kcat_rate=$(rate "$EVENTS" "$kcat_s")
  local brin_rate
  brin_rate=$(rate "$EVENTS" "$brin_s")
  printf '\n%-44s %12s %10s %8s\n' "ingest of $EVENTS events" "events/s" "seconds" "CPU s"
  printf '%-44s %12s %10s %8s\n' "log-analyzer ingest, MAILBOX_METRICS=on" "$on_rate" "$on_s" "$on_cpu"
  printf '%-44s %12s %10s %8s\n' "log-analyzer ingest, MAILBOX_METRICS=off" "$off_rate" "$off_s" "$off_cpu"
  printf '%-44s %12s %10s\n' "psql COPY, same rows (faster of before/after)" "$copy_rate" "$copy_s"
  printf '%-44s %12s %10s\n' "  COPY before / after (s)" "" "$copy_before / $copy_after"
  printf '%-44s %12s %10s\n' "psql COPY, BRIN on ts only (comparison)" "$brin_rate" "$brin_s"
  printf '%-44s %12s %10s\n' "kcat -C | psql COPY (raw JSON → jsonb)" "$kcat_rate" "$kcat_s"
  printf '%-44s %12s\n' "ratio ingest (on) / COPY" "$(ratio "$on_rate" "$copy_rate")"
  printf '%-44s %12s\n' "ratio ingest (off) / COPY" "$(ratio "$off_rate" "$copy_rate")"
  printf '%-44s %12s\n' "ratio ingest (on) / kcat | psql" "$(ratio "$on_rate" "$kcat_rate")"
  printf '%-44s %12s\n' "instrumentation cost (off / on)" "$(ratio "$off_rate" "$on_rate")"
  printf 'first to last commit: on %s s, off %s s\n%s\n' "$on_span" "$off_span" "$perf_note"
  [ -z "$profile" ] || printf '%s\n' "$profile"

  {
    echo
    echo "## ingest2 — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    machine
    echo "- $EVENTS events pre-produced to $PARTITIONS partitions; \`scripts/bench.sh $BENCH_CMD\` (scripts/bench-ingest.sh)"
    echo "- load average (1, 5, 15 min) when the measurements began: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared)"
    echo
    echo "| path | events/s | seconds | CPU s |"
    echo "|---|---:|---:|---:|"
    echo "| log-analyzer ingest, start to zero lag, \`MAILBOX_METRICS=on\` | $on_rate | $on_s | $on_cpu |"
    echo "| the same binary, \`MAILBOX_METRICS=off\` | $off_rate | $off_s | $off_cpu |"
    echo "| psql \`COPY\` of the same rows into a table with \`logs\`' indexes (baseline), faster of before ($copy_before s) and after ($copy_after s) | $copy_rate | $copy_s | |"
    echo "| for comparison: psql \`COPY\` into a table with only a BRIN on ts (the baseline of the runs before the search indexes) | $brin_rate | $brin_s | |"
    echo "| \`kcat -C … \| psql -c COPY\` of the raw JSON into one jsonb column (scripted floor) | $kcat_rate | $kcat_s | |"
    echo "| ratio ingest (on / off) / COPY | $(ratio "$on_rate" "$copy_rate") / $(ratio "$off_rate" "$copy_rate") | | |"
    echo "| ratio ingest (on) / kcat floor | $(ratio "$on_rate" "$kcat_rate") | | |"
    echo
    echo "First to last commit: on $on_span s, off $off_span s. $perf_note"
    if [ -n "$profile" ]; then
      echo
      echo '```'
      printf '%s\n' "$profile"
      echo '```'
    fi
  } | record
}
