# shellcheck shell=bash
# `scripts/bench.sh recovery` and `scripts/bench.sh scale`: how the pipeline recovers from a crash and
# how it grows with partitions, processes and rate. Sourced by scripts/bench.sh (its helpers: setup,
# prepare, start_run, stop_run, log, die, rate, secs, now, pct, machine, record, poll_until, api_counts,
# freshness_probes, free_port, cleanup_db; GEN, BIN, WORK, QUICK, ADMIN_URL, PARTITIONS, RUN_ID).
#
#   recovery  kill -9 of an ingest process while events flow, restarted at once: seconds from the
#             restart to its first stored rows, with dynamic membership (no INSTANCE_ID) and with
#             static membership (INSTANCE_ID), BENCH_RECOVERY_ROUNDS (3) kills each, same topic and
#             run; ends by checking that every produced message is stored exactly once
#   scale     events/s of ingest (pre-produced events to zero lag) against partitions (1, 6, 24) and
#             ingest processes (1, 2, 3); then freshness (produce→visible p50/p99, as `freshness`)
#             against the rate `run --generate` ingests (1k, 10k, 50k events/s); both drawn as PNG
#             charts (gnuplot) into docs/ beside their tables in docs/BENCHMARKS.md
# --quick: one point per curve, tiny sizes; the charts go to the scratch folder.

SCALE_DOCS=docs

scale_stored() {
  psql -X -qtA "$DATABASE_URL" -c "SELECT COALESCE(sum(next_offset), 0) FROM kafka_offsets WHERE topic = '$KAFKA_TOPIC'"
}

# Waits inside PostgreSQL (every 5 ms, each statement a fresh snapshot) until the topic's stored
# offsets move past $1, then prints the server's clock (ns since the epoch). Start it before what it
# times, so its connection is open by then.
scale_advanced_at() {
  psql -X -qtA -v ON_ERROR_STOP=1 "$DATABASE_URL" <<SQL | tail -n 1
DO \$\$
DECLARE deadline timestamptz := clock_timestamp() + interval '60 s';
BEGIN
  WHILE (SELECT COALESCE(sum(next_offset), 0) FROM kafka_offsets WHERE topic = '$KAFKA_TOPIC') <= $1 LOOP
    IF clock_timestamp() > deadline THEN RAISE EXCEPTION 'nothing stored 60 s after the restart'; END IF;
    PERFORM pg_sleep(0.005);
  END LOOP;
END \$\$;
SELECT (extract(epoch FROM clock_timestamp()) * 1e9)::bigint;
SQL
}

# Starts one `ingest` (log file $1, extra environment as "NAME=value" arguments); sets SCALE_PID.
# Not in a command substitution: the process must be this shell's child, for `wait`.
SCALE_PID=
scale_ingest() {
  local log=$1
  shift
  env "$@" "$BIN" ingest >>"$log" 2>&1 &
  SCALE_PID=$!
}

# Waits until the stored offsets grow (the process owns partitions and writes), for $1 seconds at most.
scale_wait_flowing() {
  local limit=$1 pid=$2 base
  base=$(scale_stored)
  local deadline=$((SECONDS + limit))
  until [ "$(scale_stored)" -gt "$base" ]; do
    kill -0 "$pid" 2>/dev/null || die "ingest exited; see $WORK/recovery.log"
    [ "$SECONDS" -lt "$deadline" ] || die "ingest stored nothing within $limit s"
    sleep 0.2
  done
}

bench_recovery() {
  setup
  local rounds="${BENCH_RECOVERY_ROUNDS:-3}" flow="${BENCH_RATE:-2000}"
  if [ "$QUICK" = 1 ]; then rounds=1 flow=300; fi
  # Events flow the whole time: a restarted process has something to store at once.
  "$GEN" generate --rate "$flow" --duration 1h --to kafka 2>"$WORK/recovery-gen.log" &
  local gen_pid=$!
  local rows=() mode
  declare -A first
  for mode in dynamic static; do
    local member=()
    [ "$mode" = static ] && member=("INSTANCE_ID=bench-$RUN_ID-0")
    local pid
    scale_ingest "$WORK/recovery.log" "${member[@]}"
    pid=$SCALE_PID
    scale_wait_flowing 60 "$pid"
    first[$mode]=""
    for round in $(seq "$rounds"); do
      sleep 1
      local before t0 t1 watcher
      kill -9 "$pid"
      wait "$pid" 2>/dev/null || true
      before=$(scale_stored)
      scale_advanced_at "$before" >"$WORK/advanced" &
      watcher=$!
      sleep 0.1 # the watcher's connection is open before the clock starts
      t0=$(date +%s%N)
      scale_ingest "$WORK/recovery.log" "${member[@]}"
      pid=$SCALE_PID
      wait "$watcher" || die "$mode round $round: nothing stored 60 s after the restart"
      t1=$(cat "$WORK/advanced")
      local took
      took=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
      log "recovery ($mode membership) round $round: first rows $took s after the restart"
      first[$mode]+="$took "
    done
    kill -TERM "$pid"
    wait "$pid" || true
  done
  kill -TERM "$gen_pid"
  wait "$gen_pid" || true
  # Exactly once: every message the topic holds is stored once, as a row or a dead letter.
  local produced stored_rows
  scale_ingest "$WORK/recovery.log"
  pid=$SCALE_PID
  # The generator's last line counts what Kafka acknowledged.
  produced=$(grep -o 'acked=[0-9]*' "$WORK/recovery-gen.log" | tail -n 1 | cut -d= -f2)
  produced=${produced:-0}
  local deadline=$((SECONDS + 120)) total=-1
  until [ "$total" -ge "$produced" ] && [ "$produced" -gt 0 ]; do
    total=$(scale_stored)
    [ "$SECONDS" -lt "$deadline" ] || break
    sleep 0.5
  done
  kill -TERM "$pid"
  wait "$pid" || true
  stored_rows=$(psql -X -qtA "$DATABASE_URL" -c "SELECT (SELECT count(*) FROM logs) + (SELECT count(*) FROM log_rejects)")
  [ "$stored_rows" = "$total" ] || die "recovery: $stored_rows rows and dead letters for $total stored offsets"
  [ "$produced" -eq 0 ] || [ "$total" = "$produced" ] || log "recovery: $total of $produced produced messages stored (generator's count)"
  cleanup_db
  printf '\n%-22s %s\n' "restart → first rows" "seconds, each kill -9"
  for mode in dynamic static; do
    local sorted median
    sorted=$(tr ' ' '\n' <<<"${first[$mode]}" | grep . | sort -n | tr '\n' ' ')
    median=$(tr ' ' '\n' <<<"${first[$mode]}" | grep . | pct 50)
    printf '%-22s %s (median %s)\n' "$mode membership" "$sorted" "$median"
    local name="$mode membership"
    [ "$mode" = dynamic ] || name+=' (`INSTANCE_ID`)'
    rows+=("| $name | ${sorted% } | $median |")
  done
  printf 'exactly once: %s messages stored, %s rows and dead letters\n' "$total" "$stored_rows"
  {
    echo
    echo "## recovery — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    machine
    echo "- \`scripts/bench.sh recovery\`: \`generate --rate $flow --to kafka\` flowing into $PARTITIONS partitions; one"
    echo "  \`ingest\` killed with \`kill -9\` and restarted at once, $rounds times with dynamic membership, then $rounds"
    echo "  times with the same \`INSTANCE_ID\` (static membership), in one run on one topic; timed from the"
    echo "  restart to the first stored rows (a DO loop inside PostgreSQL, every 5 ms). Afterwards: $total"
    echo "  messages stored, $stored_rows rows and dead letters (exactly once)"
    echo
    echo "| membership | restart → first rows, s (each kill) | median |"
    echo "|---|---|---:|"
    printf '%s\n' "${rows[@]}"
  } | record
}

# Ingest throughput of $2 processes over the $1 events pre-produced to KAFKA_TOPIC, into a fresh
# database of their own; sets SCALE_RATE (events/s).
SCALE_RATE=
scale_ingest_rate() {
  local events=$1 procs=$2 db="${DB}_p$2" pids=() t0 t1
  psql -X -q "$ADMIN_URL" -c "CREATE DATABASE $db"
  local url="${ADMIN_URL%/*}/$db"
  DATABASE_URL="$url" "$BIN" migrate >/dev/null
  t0=$(now)
  for _ in $(seq "$procs"); do
    scale_ingest "$WORK/scale.log" DATABASE_URL="$url" KAFKA_GROUP="${KAFKA_GROUP}_p$procs"
    pids+=("$SCALE_PID")
  done
  local stored=0 deadline=$((SECONDS + 900))
  while [ "$stored" -lt "$events" ]; do
    sleep 0.1
    stored=$(DATABASE_URL="$url" scale_stored)
    [ "$SECONDS" -lt "$deadline" ] || die "scale: $procs processes stored $stored of $events within 900 s"
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || die "scale: an ingest exited; see $WORK/scale.log"; done
  done
  t1=$(now)
  for pid in "${pids[@]}"; do kill -TERM "$pid"; done
  for pid in "${pids[@]}"; do wait "$pid" || true; done
  psql -X -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
  SCALE_RATE=$(rate "$events" "$(secs "$t0" "$t1")")
}

# One freshness point: `run --generate $1` and $2 probes one after the other; appends
# "offered achieved_rate api_p50 api_p99 sql_p50 sql_p99" to $WORK/fresh.dat.
scale_freshness_point() {
  local rate=$1 probes=$2
  setup
  start_run "$rate"
  sleep 2
  # shellcheck disable=SC2034 # post and wstart: freshness_probes fills them with the others
  local api=() sql=() post=() wstart=() base t_start
  base=$(psql -X -qtA "$DATABASE_URL" -c "SELECT count(*) FROM logs")
  t_start=$(now)
  freshness_probes "$probes"
  local stored achieved
  stored=$(psql -X -qtA "$DATABASE_URL" -c "SELECT count(*) FROM logs")
  achieved=$(rate $((stored - base)) "$(secs "$t_start" "$(now)")")
  stop_run
  cleanup_db
  local point
  point="$rate $achieved $(printf '%s\n' "${api[@]}" | pct 50) $(printf '%s\n' "${api[@]}" | pct 99)"
  point+=" $(printf '%s\n' "${sql[@]}" | pct 50) $(printf '%s\n' "${sql[@]}" | pct 99)"
  log "scale: offered $rate events/s: $point (offered, achieved, API p50 p99, SQL p50 p99 in ms)"
  echo "$point" >>"$WORK/fresh.dat"
}

# gnuplot from Debian (scripts/tools.sh installs it when missing).
scale_gnuplot() {
  command -v gnuplot >/dev/null || scripts/tools.sh >&2 || die "scripts/tools.sh could not install gnuplot"
  command -v gnuplot >/dev/null || die "gnuplot is not installed"
}

bench_scale() {
  prepare
  scale_gnuplot
  local partition_list="1 6 24" proc_list="1 2 3" rate_list="1000 10000 50000"
  local events="${BENCH_SCALE_EVENTS:-1000000}" probes="${BENCH_PROBES:-100}" charts="$SCALE_DOCS"
  if [ "$QUICK" = 1 ]; then
    partition_list=6 proc_list=2 rate_list=200 events=5000 probes=3 charts="$WORK"
  fi
  local saved_partitions=$PARTITIONS
  : >"$WORK/scale.dat"
  local p n r
  for p in $partition_list; do
    PARTITIONS=$p
    setup
    log "scale: pre-producing $events events to $p partitions"
    "$GEN" generate --rate 0 --count "$events" --seed 11 --to kafka 2>"$WORK/produce.log" ||
      { cat "$WORK/produce.log" >&2; exit 1; }
    local line="$p"
    for n in $proc_list; do
      scale_ingest_rate "$events" "$n"
      log "scale: $p partitions, $n ingest processes: $SCALE_RATE events/s"
      line+=" $SCALE_RATE"
    done
    echo "$line" >>"$WORK/scale.dat"
    cleanup_db
  done
  PARTITIONS=$saved_partitions
  : >"$WORK/fresh.dat"
  for r in $rate_list; do
    log "scale: freshness while \`run --generate $r\` ingests"
    scale_freshness_point "$r" "$probes"
  done

  # Charts: one line per process count over partitions; p99 (and p50) over the rate.
  local columns=() i=2
  for n in $proc_list; do
    columns+=("'$WORK/scale.dat' using 1:$i with linespoints title '$n ingest process$([ "$n" = 1 ] || echo es)'")
    i=$((i + 1))
  done
  gnuplot <<GP
set terminal pngcairo size 800,480
set output '$charts/scale-partitions.png'
set title 'ingest events/s against partitions and ingest processes'
set xlabel 'partitions'
set ylabel 'events/s (pre-produced, to zero lag)'
set logscale x 2
set xtics ($(tr ' ' ',' <<<"$partition_list"))
set key top left
set grid
set yrange [0:*]
plot $(IFS=,; echo "${columns[*]}")
GP
  gnuplot <<GP
set terminal pngcairo size 800,480
set output '$charts/scale-freshness.png'
set title 'produce→visible in /stats/errors against the ingest rate'
set xlabel 'offered events/s (run --generate)'
set ylabel 'ms'
set logscale x 10
set key top left
set grid
set yrange [0:*]
plot '$WORK/fresh.dat' using 1:4 with linespoints title 'stats API p99', \
     '$WORK/fresh.dat' using 1:3 with linespoints title 'stats API p50', \
     '$WORK/fresh.dat' using 1:6 with linespoints title 'direct SQL p99 (baseline)', \
     100 with lines dashtype 2 title 'goal: p99 100 ms at 10k/s'
GP
  [ -s "$charts/scale-partitions.png" ] && [ -s "$charts/scale-freshness.png" ] || die "gnuplot drew no chart"
  log "charts: $charts/scale-partitions.png, $charts/scale-freshness.png"

  printf '\n%-12s' "partitions"
  for n in $proc_list; do printf ' %14s' "$n process(es)"; done
  printf '\n'
  awk '{printf "%-12s", $1; for (i = 2; i <= NF; i++) printf " %14s", $i; printf "\n"}' "$WORK/scale.dat"
  printf '\n%-10s %10s %9s %9s %9s %9s\n' offered achieved "API p50" "API p99" "SQL p50" "SQL p99"
  awk '{printf "%-10s %10s %9s %9s %9s %9s\n", $1, $2, $3, $4, $5, $6}' "$WORK/fresh.dat"
  {
    echo
    echo "## scale — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    machine
    echo "- \`scripts/bench.sh scale\`: $events events pre-produced to a topic of 1, 6 or 24 partitions, then 1, 2 or 3"
    echo "  \`ingest\` processes started together in one group (a fresh database each time), timed from their"
    echo "  start to zero lag. Then freshness as \`scripts/bench.sh freshness\` ($probes probes each) while"
    echo "  \`run --generate RATE\` ingests; \"achieved\" is the rate rows were stored meanwhile (the generator"
    echo "  shares the cores)"
    echo
    echo "![ingest events/s against partitions and processes](scale-partitions.png)"
    echo
    printf '| partitions |'
    for n in $proc_list; do printf ' %s ingest |' "$n"; done
    printf '\n|---|'
    for _ in $proc_list; do printf -- '---:|'; done
    printf '\n'
    awk '{printf "| %s |", $1; for (i = 2; i <= NF; i++) printf " %s |", $i; printf "\n"}' "$WORK/scale.dat"
    echo
    echo "![freshness p99 against the ingest rate](scale-freshness.png)"
    echo
    echo "| offered events/s | achieved | API p50 ms | API p99 ms | SQL p50 ms | SQL p99 ms |"
    echo "|---:|---:|---:|---:|---:|---:|"
    awk '{printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6}' "$WORK/fresh.dat"
  } | record
}
