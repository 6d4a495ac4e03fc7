# shellcheck shell=bash
# `scripts/bench.sh cardinality`: how cost grows with the number of distinct services (and users),
# with the MAX_LIVE_SERVICES memory policy in force. Sourced by scripts/bench.sh (its helpers: setup,
# start_run, stop_run, cleanup_db, log, die, rate, secs, now, machine, record; protocols_tool from
# scripts/bench-protocols.sh).
#
# For each count of CARD_SERVICES (default 10 1000 10000 100000; the same number of users), one fresh
# topic and database: CARD_EVENTS events (default 600,000) spread over the last hour (the 1 h horizon)
# are produced into Kafka first, then `run` starts (no generator) and ingests them: events/s from its
# start until every row is stored, its VmRSS once they are in memory, then /stats/errors?window=1h
# under vegeta at CARD_QPS requests/s for CARD_SECONDS (open loop: p50, p99, errors), the answer's
# bytes at the default limit (100) and the source that answered (memory while services ≤ the cap).
# Where the store answered, `run` is restarted with RANKING_KEPT=off and attacked again: the baseline
# of the same rows, each question counting the whole hour (src/db/ranking.rs is what it measures).
# --quick: 10 and 2,000 services (over the cap: the store answers), 3,000 events, 2 s of 20 requests/s.

cardinality_count() { psql -X -qtA "$DATABASE_URL" -c "SELECT count(*) FROM logs"; }

# vegeta on /stats/errors?window=1h at $2 requests/s for $3 s: "p50 p99 non-2xx" (ms).
cardinality_attack() {
  echo "GET $URL/stats/errors?window=1h" |
    "$1" attack -rate="$2/s" -duration="${3}s" -timeout=10s | "$1" report -type=json |
    python3 -c 'import json, sys
r = json.load(sys.stdin)
codes = r.get("status_codes") or {}
print("%.2f %.2f %d" % (r["latencies"]["50th"] / 1e6, r["latencies"]["99th"] / 1e6, sum(v for k, v in codes.items() if k != "200")))'
}

bench_cardinality() {
  local counts="${CARD_SERVICES:-10 1000 10000 100000}" events="${CARD_EVENTS:-600000}"
  local qps="${CARD_QPS:-1000}" seconds="${CARD_SECONDS:-10}"
  if [ "$QUICK" = 1 ]; then
    counts="${CARD_SERVICES:-10 2000}" events=3000 qps=20 seconds=2
  fi
  prepare
  local vegeta cap
  vegeta=$(protocols_tool vegeta)
  cap="${MAX_LIVE_SERVICES:-1000}"
  local rows="" table
  table=$(printf '%-9s | %8s | %10s | %8s | %8s | %8s | %6s | %10s | %-8s | %s' services events ingest/s "RSS MiB" "p50 ms" "p99 ms" "non2xx" "bytes" source "RANKING_KEPT=off: p50 p99 non2xx")
  for n in $counts; do
    setup
    log "cardinality: $events events of $n services and $n users over the last hour into $KAFKA_TOPIC"
    "$GEN" generate --rate 0 --count "$events" --seed 5 --services "$n" --users "$n" \
      --late-ratio 1 --late-max 1h --to kafka 2>"$WORK/generate.log" ||
      { tail -n 5 "$WORK/generate.log" >&2; die "generate failed"; }
    local t0 t1 stored deadline
    t0=$(now)
    start_run 0
    deadline=$((SECONDS + 600))
    stored=0
    while [ "$stored" -lt "$events" ]; do
      [ "$SECONDS" -lt "$deadline" ] || die "only $stored of $events rows stored after 600 s"
      kill -0 "$RUN_PID" 2>/dev/null || { tail -n 20 "$WORK/run.log" >&2; die "run exited during ingest"; }
      sleep 0.5
      stored=$(cardinality_count)
    done
    t1=$(now)
    local ingest rss
    ingest=$(rate "$events" "$(secs "$t0" "$t1")")
    sleep 1 # the last batch's delta reaches memory right after its commit
    rss=$(awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$RUN_PID/status")
    local answer bytes source
    answer="$WORK/answer.json"
    curl -fs "$URL/stats/errors?window=1h" -o "$answer" || die "/stats/errors?window=1h failed"
    bytes=$(wc -c <"$answer")
    source=$(python3 -c 'import json, sys; a = json.load(open(sys.argv[1])); print(a["source"]); assert a["total"] == sum(s["total"] for s in a["by_service"]) + a["other"]["total"]' "$answer") ||
      die "the 1 h answer does not add up: $(head -c 300 "$answer")"
    local p50 p99 bad off_p50="—" off_p99="—" off_bad="—"
    read -r p50 p99 bad < <(cardinality_attack "$vegeta" "$qps" "$seconds")
    if [ "$source" != memory ]; then
      # The baseline of the same rows: the store counting the whole hour for every question.
      stop_run
      RANKING_KEPT=off start_run 0
      read -r off_p50 off_p99 off_bad < <(cardinality_attack "$vegeta" "$qps" "$seconds")
    fi
    stop_run
    cleanup_db
    local line
    line=$(printf '%-9s | %8s | %10s | %8s | %8s | %8s | %6s | %10s | %-8s | %s %s %s' "$n" "$events" "$ingest" "$rss" "$p50" "$p99" "$bad" "$bytes" "$source" "$off_p50" "$off_p99" "$off_bad")
    table+=$'\n'"$line"
    rows+="| $n | $events | $ingest | $rss | $p50 | $p99 | $bad | $bytes | $source | $off_p50 | $off_p99 | $off_bad |"$'\n'
    log "  $line"
  done
  printf '\n%s\n' "$table"
  {
    echo
    echo "## cardinality — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    machine
    echo "- \`scripts/bench.sh cardinality\`: per row a fresh topic; $events events (as many distinct users as"
    echo "  services, timestamps spread over the last hour) produced first, then \`log-analyzer run\` ingests"
    echo "  them (events/s from its start to the last stored row); VmRSS once stored; \`/stats/errors?window=1h\`"
    echo "  under vegeta at $qps requests/s for $seconds s (open loop; latencies in ms); answer bytes at the"
    echo "  default limit of 100 services; MAX_LIVE_SERVICES=$cap. Where the store answers, the baseline of"
    echo "  the same rows: \`run\` restarted with \`RANKING_KEPT=off\` (the whole hour counted per question)"
    echo "  under the same load"
    echo
    echo "| services | events | ingest events/s | RSS MiB | p50 | p99 | non-2xx | answer bytes | source | off: p50 | off: p99 | off: non-2xx |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"
    printf '%s' "$rows"
  } | record
}
