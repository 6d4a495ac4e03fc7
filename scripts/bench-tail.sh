# shellcheck shell=bash
# `scripts/bench.sh tail`: what announcing each committed batch to live tails (pg_notify inside the
# batch's transaction, TAIL_NOTIFY) costs the writer. Sourced by scripts/bench.sh (its helpers:
# setup, cleanup_db, start_api, wait_for, log, die, rate, ratio, machine, record, and ingest2_run,
# ingest2_count from scripts/bench-ingest.sh; GEN, BIN, WORK, EVENTS, PARTITIONS, QUICK).
#
# The same pre-produced events (BENCH_EVENTS, default 2,000,000; --quick: 20,000) are ingested,
# each run from an empty `logs`, in turn:
#   1. TAIL_NOTIFY=off, no tail (the writer as before the tail existed);
#   2. TAIL_NOTIFY=on, no tail (the NOTIFY alone);
#   3. TAIL_NOTIFY=on with an `api` process serving one tail client (curl -N) whose filter matches
#      nothing: the listener reads every announced range back, as a real tail does;
# then 1 and 2 once more: the machine is shared, the faster of the two runs of each is kept.

# Starts `api` and one tail client on it; sets TAIL_API_PID and TAIL_CURL_PID.
tail_client_start() {
  REDIS_URL='' start_api tail-api
  TAIL_API_PID=$API_PID
  curl -sN "$API_URL/logs/tail?level=fatal&q=no_such_token_anywhere" >"$WORK/tail-stream.txt" &
  TAIL_CURL_PID=$!
  wait_for "$TAIL_CURL_PID" "the tail client" "$WORK/tail-stream.txt" 60 grep -q 'tail open' "$WORK/tail-stream.txt"
}

tail_client_stop() {
  kill -TERM "$TAIL_CURL_PID" "$TAIL_API_PID" 2>/dev/null || true
  wait "$TAIL_CURL_PID" "$TAIL_API_PID" 2>/dev/null || true
}

faster() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b ? a : b) }'; }

bench_tail() {
  setup
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  log "pre-producing $EVENTS events to $KAFKA_TOPIC ($PARTITIONS partitions)"
  "$GEN" generate --rate 0 --count "$EVENTS" --seed 7 --to kafka 2>"$WORK/produce.log" || {
    cat "$WORK/produce.log" >&2
    exit 1
  }
  TAIL_NOTIFY=off ingest2_run notify-off-1 off
  local off1=$INGEST_S
  TAIL_NOTIFY=on ingest2_run notify-on-1 off
  local on1=$INGEST_S on_cpu=$INGEST_CPU
  tail_client_start
  TAIL_NOTIFY=on ingest2_run notify-tailed off
  local tailed=$INGEST_S tailed_cpu=$INGEST_CPU
  tail_client_stop
  TAIL_NOTIFY=off ingest2_run notify-off-2 off
  local off2=$INGEST_S off_cpu=$INGEST_CPU
  TAIL_NOTIFY=on ingest2_run notify-on-2 off
  local on2=$INGEST_S
  cleanup_db

  local off_s on_s off_rate on_rate tailed_rate
  off_s=$(faster "$off1" "$off2")
  on_s=$(faster "$on1" "$on2")
  off_rate=$(rate "$EVENTS" "$off_s")
  on_rate=$(rate "$EVENTS" "$on_s")
  tailed_rate=$(rate "$EVENTS" "$tailed")
  printf '\n%-52s %12s %14s\n' "ingest of $EVENTS events (MAILBOX_METRICS=off)" "events/s" "seconds"
  printf '%-52s %12s %14s\n' "TAIL_NOTIFY=off (faster of two)" "$off_rate" "$off1 / $off2"
  printf '%-52s %12s %14s\n' "TAIL_NOTIFY=on (faster of two)" "$on_rate" "$on1 / $on2"
  printf '%-52s %12s %14s\n' "TAIL_NOTIFY=on, one tail client on an api process" "$tailed_rate" "$tailed"
  printf '%-52s %12s\n' "cost of the NOTIFY (off / on)" "$(ratio "$off_rate" "$on_rate")"
  printf '%-52s %12s\n' "cost of a tailed stream (off / tailed)" "$(ratio "$off_rate" "$tailed_rate")"

  {
    echo
    echo "## tail — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    machine
    echo "- $EVENTS events pre-produced to $PARTITIONS partitions; \`scripts/bench.sh $BENCH_CMD\` (scripts/bench-tail.sh)"
    echo "- load average (1, 5, 15 min) when the measurements began: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared)"
    echo
    echo "| ingest, start to zero lag, \`MAILBOX_METRICS=off\` | events/s | seconds | CPU s |"
    echo "|---|---:|---:|---:|"
    echo "| \`TAIL_NOTIFY=off\` (faster of $off1 s, $off2 s) | $off_rate | $off_s | $off_cpu |"
    echo "| \`TAIL_NOTIFY=on\` (faster of $on1 s, $on2 s) | $on_rate | $on_s | $on_cpu |"
    echo "| \`TAIL_NOTIFY=on\`, an \`api\` process serving one tail (reads every range back) | $tailed_rate | $tailed | $tailed_cpu |"
    echo "| cost of the NOTIFY (off / on) | $(ratio "$off_rate" "$on_rate") | | |"
    echo "| cost of a tailed stream (off / tailed) | $(ratio "$off_rate" "$tailed_rate") | | |"
  } | record
}
