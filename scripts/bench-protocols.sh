# shellcheck shell=bash
# `scripts/bench.sh protocols`: events/s stored through each push protocol, one after the other in one
# `run` (the stack mode), against POST /ingest NDJSON as the baseline. Sourced by scripts/bench.sh (its
# helpers: setup, start_run, log, die, rate, ratio, secs, now, machine, record).
#
# Open loop: each path is offered a FIXED rate of events (bodies of BENCH_BODY_EVENTS records each) for
# BENCH_PROTOCOL_SECONDS per step, whatever the server answers, at each rate of BENCH_PROTOCOL_RATES
# in turn; the highest stored rate over the steps is the path's ceiling on this machine. The HTTP
# paths are driven by vegeta with the same N generated events as NDJSON, OTLP protobuf and Loki
# protobuf+snappy (examples/protocol_bodies.rs); OTLP/gRPC twice: the same OTLP body as Export calls
# (examples/otlp_grpc_load.rs, open loop) and telemetrygen, the real client (its SDK batches
# BENCH_BODY_EVENTS records per Export, and on two shared cores it cannot offer the higher rates). The truth is what PostgreSQL holds: rows committed from the
# step's start until the pipeline has drained, over the seconds from the start to the last commit.

# vegeta from PATH, else the tools folder (scripts/tools.sh installs it there).
protocols_tool() {
  local name=$1 bin="${TOOLS_BIN:-$HOME/.cache/log-analyzer/bin}"
  if command -v "$name" >/dev/null; then
    command -v "$name"
    return
  fi
  [ -x "$bin/$name" ] || scripts/tools.sh >&2 || die "scripts/tools.sh could not install $name"
  [ -x "$bin/$name" ] || die "$name is not in $bin after scripts/tools.sh"
  echo "$bin/$name"
}

protocols_count() { psql -X -qtA "$DATABASE_URL" -c "SELECT count(*) FROM logs WHERE topic = '$KAFKA_TOPIC'"; }

# Waits until the topic's row count stops growing (and has reached $1, the events the answers
# acknowledged, when known), then prints "rows seconds": the rows committed since epoch second $2 and
# the seconds from $2 to the last of those commits.
protocols_drained() {
  local want=$1 t0=$2 deadline=$((SECONDS + 180)) last=-1 stable=0 count
  while :; do
    count=$(protocols_count)
    if [ "$count" = "$last" ] && [ "$count" -ge "$want" ]; then
      stable=$((stable + 1))
      [ "$stable" -ge 3 ] && break
    else
      stable=0
    fi
    last=$count
    [ "$SECONDS" -lt "$deadline" ] || die "the pipeline did not drain within 180 s ($count rows, $want acknowledged)"
    kill -0 "$RUN_PID" 2>/dev/null || { tail -n 20 "$WORK/run.log" >&2; die "run exited during the protocols benchmark"; }
    sleep 0.5
  done
  psql -X -qtA -F ' ' "$DATABASE_URL" -c "SELECT count(*), round(extract(epoch FROM max(ingested_at) - to_timestamp($t0))::numeric, 2)
    FROM logs WHERE topic = '$KAFKA_TOPIC' AND ingested_at >= to_timestamp($t0)"
}

# One step over HTTP: vegeta offers $3 events/s as bodies of $BODY_EVENTS records to path $1 with
# content type $2 ($4: the body file) for $STEP_SECONDS; prints "stored seconds ok_share p50_ms p99_ms".
protocols_http_step() {
  local path=$1 type=$2 offered=$3 body=$4 base t0 result
  local bodies_per_s
  bodies_per_s=$(awk -v e="$offered" -v n="$BODY_EVENTS" 'BEGIN { r = e / n; printf "%.3f", (r < 0.001 ? 0.001 : r) }')
  printf 'POST %s%s\nContent-Type: %s\n@%s\n' "$URL" "$path" "$type" "$body" >"$WORK/targets"
  base=$(protocols_count)
  t0=$(now)
  # Rate as bodies per minute: vegeta takes an integer per unit, and some steps are under 1 body/s.
  "$VEGETA" attack -targets="$WORK/targets" -rate="$(awk -v r="$bodies_per_s" 'BEGIN { printf "%d", r * 60 + 0.5 }')/1m" \
    -duration="${STEP_SECONDS}s" -timeout=60s >"$WORK/attack.bin" || die "vegeta attack on $path failed"
  "$VEGETA" report -type=json <"$WORK/attack.bin" >"$WORK/report.json"
  local ok total p50 p99
  read -r ok total p50 p99 < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
codes = r.get("status_codes") or {}
ok = sum(n for c, n in codes.items() if c.startswith("2"))
lat = r["latencies"]
print(ok, r["requests"], round(lat["50th"] / 1e6), round(lat["99th"] / 1e6))' "$WORK/report.json")
  [ "$total" -gt 0 ] || die "vegeta sent nothing to $path"
  # Past the ceiling some answers are not 2xx: which ones (0 is vegeta's timeout or a dropped connection).
  [ "$ok" = "$total" ] || log "  $path answers: $(python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(r["status_codes"], (r.get("errors") or [])[:2])' "$WORK/report.json")"
  if [ "$QUICK" = 1 ] && [ "$ok" != "$total" ]; then
    die "$path: $((total - ok)) of $total requests were not accepted: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["status_codes"], r.get("errors", [])[:3])' "$WORK/report.json")"
  fi
  result=$(protocols_drained $((base + ok * BODY_EVENTS)) "$t0")
  local stored seconds
  read -r stored seconds <<<"$result"
  [ "$stored" -ge $((ok * BODY_EVENTS)) ] || die "$path: $stored rows stored, $((ok * BODY_EVENTS)) acknowledged"
  echo "$stored $seconds $(ratio "$ok" "$total") $p50 $p99"
}

# One step over OTLP/gRPC: telemetrygen, 4 workers, offering $1 events/s in all; the same output
# shape (latencies are not reported by telemetrygen: "-").
protocols_grpc_step() {
  local offered=$1 workers=4 base t0 result
  base=$(protocols_count)
  t0=$(now)
  "$TELEMETRYGEN" logs --otlp-insecure --otlp-endpoint "$GRPC" --workers "$workers" \
    --rate "$(awk -v e="$offered" -v w="$workers" 'BEGIN { printf "%.3f", e / w }')" \
    --duration "${STEP_SECONDS}s" --batch-size "$BODY_EVENTS" --service protocols-bench \
    --severity-text Error --severity-number 17 --body "upstream timeout after 30ms calling payments" \
    >"$WORK/telemetrygen.log" 2>&1 || { tail -n 5 "$WORK/telemetrygen.log" >&2; die "telemetrygen failed"; }
  # Its own ERROR/WARN lines, not the gRPC library's INFO chatter about closing connections at exit.
  if grep -vF '"grpc_log": true' "$WORK/telemetrygen.log" | grep -qE $'\t(WARN|ERROR|FATAL)\t'; then
    [ "$QUICK" = 1 ] && { grep -m3 -E $'\t(WARN|ERROR|FATAL)\t' "$WORK/telemetrygen.log" >&2; die "telemetrygen: exports failed"; }
    log "telemetrygen reported failed exports (see the share stored)"
  fi
  result=$(protocols_drained "$((base + 1))" "$t0")
  local stored seconds
  read -r stored seconds <<<"$result"
  echo "$stored $seconds - - -"
}

# One step over OTLP/gRPC with the prepared OTLP body: examples/otlp_grpc_load.rs offers $1 events/s
# as Export calls of $BODY_EVENTS records, open loop; the same output shape as the HTTP steps.
protocols_grpc_body_step() {
  local offered=$1 base t0 result ok total p50 p99
  base=$(protocols_count)
  t0=$(now)
  read -r ok total p50 p99 < <("$ROOT/target/$PROFILE/examples/otlp_grpc_load" "$GRPC" "$WORK/bodies/otlp.pb" \
    "$(awk -v e="$offered" -v n="$BODY_EVENTS" 'BEGIN { printf "%.3f", e / n }')" "$STEP_SECONDS" 2>"$WORK/grpc-load.log")
  [ -n "${total:-}" ] || { cat "$WORK/grpc-load.log" >&2; die "otlp_grpc_load failed"; }
  [ -s "$WORK/grpc-load.log" ] && log "$(head -c 300 "$WORK/grpc-load.log")"
  [ "$QUICK" = 1 ] && [ "$ok" != "$total" ] && die "OTLP/gRPC: $((total - ok)) of $total calls failed"
  result=$(protocols_drained $((base + ok * BODY_EVENTS)) "$t0")
  local stored seconds
  read -r stored seconds <<<"$result"
  [ "$stored" -ge $((ok * BODY_EVENTS)) ] || die "OTLP/gRPC: $stored rows stored, $((ok * BODY_EVENTS)) acknowledged"
  echo "$stored $seconds $(ratio "$ok" "$total") $p50 $p99"
}

bench_protocols() {
  setup
  local rates="${BENCH_PROTOCOL_RATES:-10000 40000 120000}"
  BODY_EVENTS="${BENCH_BODY_EVENTS:-1000}"
  STEP_SECONDS="${BENCH_PROTOCOL_SECONDS:-15}"
  if [ "$QUICK" = 1 ]; then
    rates="${BENCH_PROTOCOL_RATES:-1000}" BODY_EVENTS=100 STEP_SECONDS=3
  fi
  VEGETA=$(protocols_tool vegeta)
  TELEMETRYGEN=$(protocols_tool telemetrygen)
  log "bodies of $BODY_EVENTS events (examples/protocol_bodies.rs)"
  if [ "$PROFILE" = release ]; then
    cargo build --release --quiet --example protocol_bodies --example otlp_grpc_load
  else
    cargo build --quiet --example protocol_bodies --example otlp_grpc_load
  fi
  "$ROOT/target/$PROFILE/examples/protocol_bodies" "$WORK/bodies" "$BODY_EVENTS" >"$WORK/bodies.txt"
  local size_ndjson size_otlp size_loki
  size_ndjson=$(stat -c %s "$WORK/bodies/ingest.ndjson")
  size_otlp=$(stat -c %s "$WORK/bodies/otlp.pb")
  size_loki=$(stat -c %s "$WORK/bodies/loki.pb.snappy")

  local grpc_port
  grpc_port=$(free_port)
  GRPC="127.0.0.1:$grpc_port"
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  GRPC_ADDR="$GRPC" start_run 0

  # path name → best stored rate, and the table rows of every step.
  declare -A best
  local rows="" names=("POST /ingest NDJSON" "POST /v1/logs OTLP protobuf" "OTLP/gRPC Export, same body" "OTLP/gRPC Export, telemetrygen" "POST /loki/api/v1/push protobuf+snappy")
  local name r out stored seconds share p50 p99 got
  for r in $rates; do
    for name in "${names[@]}"; do
      log "$name: $r events/s offered for $STEP_SECONDS s"
      case "$name" in
      "POST /ingest NDJSON") out=$(protocols_http_step /ingest application/x-ndjson "$r" "$WORK/bodies/ingest.ndjson") ;;
      "POST /v1/logs"*) out=$(protocols_http_step /v1/logs application/x-protobuf "$r" "$WORK/bodies/otlp.pb") ;;
      *"same body") out=$(protocols_grpc_body_step "$r") ;;
      *telemetrygen) out=$(protocols_grpc_step "$r") ;;
      *) out=$(protocols_http_step /loki/api/v1/push application/x-protobuf "$r" "$WORK/bodies/loki.pb.snappy") ;;
      esac
      read -r stored seconds share p50 p99 <<<"$out"
      got=$(rate "$stored" "$seconds")
      log "  stored $stored in $seconds s: $got events/s; requests accepted $share; p50 $p50 ms, p99 $p99 ms"
      [ "${best[$name]:-0}" -ge "$got" ] || best[$name]=$got
      rows+="| $name | $r | $stored | $seconds | $got | $(ratio "$got" "$r") | $share | $p50 | $p99 |"$'\n'
    done
  done
  stop_run
  cleanup_db

  local base=${best["POST /ingest NDJSON"]}
  printf '\n%-42s %12s %10s\n' "best stored rate over the steps" "events/s" "× NDJSON"
  local summary=""
  for name in "${names[@]}"; do
    printf '%-42s %12s %10s\n' "$name" "${best[$name]}" "$(ratio "${best[$name]}" "$base")"
    summary+="| $name | ${best[$name]} | $(ratio "${best[$name]}" "$base") |"$'\n'
  done
  {
    echo
    echo "## protocols — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    machine
    echo "- \`${BENCH_PROTOCOL_RATES:+BENCH_PROTOCOL_RATES=\"$BENCH_PROTOCOL_RATES\" }scripts/bench.sh $BENCH_CMD\`: one \`log-analyzer run\` (stack mode, \`$PROFILE\` build),"
    echo "  each path in turn offered a fixed rate (open loop) for $STEP_SECONDS s per step, steps of $rates events/s;"
    echo "  bodies of $BODY_EVENTS generated events: NDJSON $size_ndjson B, OTLP protobuf $size_otlp B, Loki protobuf+snappy"
    echo "  $size_loki B (examples/protocol_bodies.rs), sent by vegeta; the OTLP body also over gRPC"
    echo "  (examples/otlp_grpc_load.rs, open loop like vegeta); and OTLP/gRPC from telemetrygen (4 workers, SDK batches of"
    echo "  $BODY_EVENTS records of one fixed body). Stored = rows committed to PostgreSQL from the step's start until the"
    echo "  pipeline drained; events/s = stored / seconds from the start to the last commit"
    echo "- load average (1, 5, 15 min) when the measurements began: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared)"
    echo
    echo "| path | best stored events/s | × NDJSON |"
    echo "|---|---:|---:|"
    printf '%s' "$summary"
    echo
    echo "| path | offered events/s | stored | seconds | stored events/s | × offered | requests accepted | p50 ms | p99 ms |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s' "$rows"
  } | record
}
