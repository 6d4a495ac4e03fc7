# shellcheck shell=bash
# `scripts/bench.sh openloop`: /stats/errors latency at FIXED offered request rates (open loop,
# vegeta), for 10 s, 5 m and 1 h windows, first with `run` idle, then while it ingests its own
# generator's events. Sourced by scripts/bench.sh (its helpers: setup, start_run, stop_run, log, die,
# cpu_secs, machine, record) and by nothing else.
#
# Open loop matters here: a closed-loop tool (wrk) waits for each answer before asking again, so a
# slow answer also delays the next question and the tail hides (coordinated omission). vegeta sends
# at the set rate whatever the server does, so p99 and p99.9 include the time a request queued.
#
# No history is loaded into PostgreSQL: memory answers every window within WINDOW_HORIZON from the
# moment it is ready, and summing a window walks the same minute and second buckets whether they
# hold events or not (the cost that grows with the number of services is `bench.sh cardinality`'s).
# The 1 h window thus costs what it costs in production minus the per-service sums of the older
# minutes.
#
# Load tool CPU: bash's `time` around vegeta (user + system seconds of the attack), divided by the
# step's seconds, so a figure that needs most of a core says the tool, not the server, was the limit.
#
# Settings: BENCH_OPENLOOP_RATES (requests/s, default "5000 10000 20000"; --quick: 500),
# BENCH_OPENLOOP_SECONDS (per step, default 10; --quick: 2), BENCH_OPENLOOP_INGEST (events/s of the
# second phase, default 20000; --quick: 2000), BENCH_OPENLOOP_WINDOWS (default "healthz 10s 5m 1h":
# `healthz` is GET /healthz at the same rates, the floor of HTTP, the process and the machine),
# BENCH_OPENLOOP_BASELINE (a second binary, e.g. a release build of main before a change: in each
# phase it is measured first, then the binary under test, so both rows come from the same run).
#
# Server CPU per request: the server's CPU seconds over the step divided by the answers it gave, in
# µs. Idle, that is the cost of one answer; while ingesting it also holds the ingest's share.

openloop_vegeta() {
  local bin="${TOOLS_BIN:-$HOME/.cache/log-analyzer/bin}"
  if command -v vegeta >/dev/null; then
    command -v vegeta
    return
  fi
  [ -x "$bin/vegeta" ] || scripts/tools.sh >&2 || die "scripts/tools.sh could not install vegeta"
  [ -x "$bin/vegeta" ] || die "vegeta is not in $bin after scripts/tools.sh"
  echo "$bin/vegeta"
}

# One step: vegeta offers $2 requests/s of GET /stats/errors?window=$1 (GET /healthz for the window
# "healthz") for $OPENLOOP_SECONDS s.
# Prints "p50_ms p99_ms p999_ms achieved_rps ok errors tool_cpu_pct server_cpu_pct server_us_per_req".
openloop_step() {
  local window=$1 offered=$2 tool_cpu server0 server1
  local target="$URL/stats/errors?window=$window"
  # The floor: a route with no window work, to tell the answer's tail from the process's and machine's.
  [ "$window" = healthz ] && target="$URL/healthz"
  printf 'GET %s\n' "$target" >"$WORK/openloop.targets"
  server0=$(openloop_cpu "$RUN_PID")
  local TIMEFORMAT='%U %S'
  # -timeout bounds a request that is never answered; it then counts as an error, not as a latency.
  tool_cpu=$({ time "$VEGETA" attack -targets="$WORK/openloop.targets" -rate="${offered}/1s" \
    -duration="${OPENLOOP_SECONDS}s" -timeout=10s -keepalive=true \
    -workers="$OPENLOOP_CONNECTIONS" -max-connections="$OPENLOOP_CONNECTIONS" >"$WORK/openloop.bin" 2>"$WORK/openloop.err"; } 2>&1) ||
    die "vegeta attack failed: $(head -c 300 "$WORK/openloop.err")"
  server1=$(openloop_cpu "$RUN_PID")
  "$VEGETA" encode --to csv <"$WORK/openloop.bin" >"$WORK/openloop.csv"
  python3 - "$WORK/openloop.csv" "$OPENLOOP_SECONDS" "$tool_cpu" "$server0" "$server1" <<'PY'
import csv, sys
path, seconds, tool, s0, s1 = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(), float(sys.argv[4]), float(sys.argv[5])
lat, ok, errors, first, last = [], 0, 0, None, None
# vegeta's CSV: timestamp (ns), status code, latency (ns), bytes out, bytes in, error, ...
for row in csv.reader(open(path)):
    ts, code, latency = int(row[0]), int(row[1]), int(row[2])
    first = ts if first is None else min(first, ts)
    last = ts if last is None else max(last, ts)
    if 200 <= code < 300 and not row[5]:
        ok += 1
        lat.append(latency / 1e6)
    else:
        errors += 1
lat.sort()
def pct(p):
    if not lat:
        return float("nan")
    i = min(len(lat) - 1, max(0, int(len(lat) * p / 100 + 0.999999) - 1))
    return lat[i]
sent = ok + errors
span = (last - first) / 1e9 if sent > 1 else seconds
achieved = sent / span if span > 0 else float("nan")
tool_cpu = (float(tool[0]) + float(tool[1])) / seconds * 100
server_cpu = (s1 - s0) / seconds * 100
per_request = (s1 - s0) / ok * 1e6 if ok else float("nan")
print(f"{pct(50):.3f} {pct(99):.3f} {pct(99.9):.3f} {achieved:.0f} {ok} {errors} {tool_cpu:.0f} {server_cpu:.0f} {per_request:.1f}")
PY
}

# User + system CPU seconds of process $1, to the clock tick (bench.sh's cpu_secs rounds to 0.1 s,
# 2 % of a 10 s step at half a core).
openloop_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat"
}

# `go install` leaves `vegeta -version` empty; the module version is in the binary's build info.
openloop_vegeta_version() {
  local go=go
  command -v go >/dev/null || go=/usr/local/go/bin/go
  "$go" version -m "$VEGETA" 2>/dev/null | awk '$1 == "mod" {print $3}'
}

bench_openloop() {
  VEGETA=$(openloop_vegeta)
  local rates="${BENCH_OPENLOOP_RATES:-5000 10000 20000}" ingest="${BENCH_OPENLOOP_INGEST:-20000}"
  local windows="${BENCH_OPENLOOP_WINDOWS:-healthz 10s 5m 1h}"
  OPENLOOP_SECONDS="${BENCH_OPENLOOP_SECONDS:-10}"
  # Connections capped: uncapped, vegeta opens a new one whenever answers slow down, and on two shared
  # cores the handshakes and buffers of thousands of connections (the tool's CPU above 200 %) starved
  # the server it measured. A request waiting for a free connection still counts that wait.
  OPENLOOP_CONNECTIONS="${BENCH_OPENLOOP_CONNECTIONS:-32}"
  if [ "$QUICK" = 1 ]; then
    rates="${BENCH_OPENLOOP_RATES:-500}" ingest="${BENCH_OPENLOOP_INGEST:-2000}" OPENLOOP_SECONDS="${BENCH_OPENLOOP_SECONDS:-2}"
  fi
  setup
  local load
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  local binaries="$BIN" under_test="$BIN"
  if [ -n "${BENCH_OPENLOOP_BASELINE:-}" ]; then
    [ -x "$BENCH_OPENLOOP_BASELINE" ] || die "BENCH_OPENLOOP_BASELINE=$BENCH_OPENLOOP_BASELINE is not an executable"
    binaries="$BENCH_OPENLOOP_BASELINE $BIN"
  fi
  local rows="" phase generate binary
  printf '\n%-9s %-8s %-6s %8s | %8s %8s %8s | %9s %7s %6s | %8s %9s %9s\n' phase binary window offered p50_ms p99_ms p99.9_ms achieved ok errors tool_cpu server_cpu us/req
  for phase in idle ingesting; do
    generate=0
    [ "$phase" = ingesting ] && generate=$ingest
    for binary in $binaries; do
      local name=tested
      [ "$binary" = "$under_test" ] || name=baseline
      BIN=$binary start_run "$generate"
      # The generator's first second is a burst of topic set-up; let ingest settle before measuring.
      [ "$generate" = 0 ] || sleep 3
      # A discarded step first: the first seconds of load after a start (connections opened, memo and
      # allocator warming) had a tail several times the later steps' (in debug: p99 74 ms, then 12 ms,
      # for the same window), which made whichever window went first look slowest.
      openloop_step "${windows%% *}" "${rates%% *}" >/dev/null
      local w r p50 p99 p999 achieved ok errors tool server per_request
      for w in $windows; do
        for r in $rates; do
          read -r p50 p99 p999 achieved ok errors tool server per_request < <(openloop_step "$w" "$r")
          kill -0 "$RUN_PID" 2>/dev/null || { tail -n 20 "$WORK/run.log" >&2; die "run exited during the openloop benchmark"; }
          local label="$phase"
          [ "$phase" = ingesting ] && label="ingesting $ingest/s"
          printf '%-9s %-8s %-6s %8s | %8s %8s %8s | %9s %7s %6s | %7s%% %8s%% %9s\n' "$phase" "$name" "$w" "$r" "$p50" "$p99" "$p999" "$achieved" "$ok" "$errors" "$tool" "$server" "$per_request"
          rows+="| $label | $name | $w | $r | $p50 | $p99 | $p999 | $achieved | $errors | $tool % | $server % | $per_request |"$'\n'
          # A quick run proves the harness: every answer must have been a 2xx.
          if [ "$QUICK" = 1 ] && [ "$errors" != 0 ]; then
            die "openloop $phase $w at $r req/s: $errors requests failed ($(head -c 300 "$WORK/openloop.err"))"
          fi
        done
      done
      stop_run
    done
  done
  BIN=$under_test
  cleanup_db
  {
    echo
    echo "## openloop — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    machine
    echo "- \`scripts/bench.sh $BENCH_CMD\`: vegeta $(openloop_vegeta_version) offers each rate of"
    echo "  GET /stats/errors for ${OPENLOOP_SECONDS} s (open loop, keep-alive, at most ${OPENLOOP_CONNECTIONS} connections), to \`log-analyzer run\` idle and then"
    echo "  \`run --generate $ingest\` (the generator inside the process, load tool and server on the same cores);"
    echo "  no PostgreSQL history (memory answers every window within the horizon); latencies in ms of the 2xx"
    echo "  answers; errors: non-2xx or no answer in 10 s; CPU: % of one core over the step (vegeta's from"
    echo "  bash \`time\`, the server's from /proc/<pid>/stat); µs/req: the server's CPU per answer; goal p99 ≤ 2 ms"
    echo "  at 10k req/s while ingesting; load average at the start: $load. Window \`healthz\`: GET /healthz at"
    echo "  the same rates in the same phase, no window work: the floor that HTTP, the process and the machine set"
    echo "- binaries: tested \`$under_test\`$([ -n "${BENCH_OPENLOOP_BASELINE:-}" ] && echo ", baseline \`$BENCH_OPENLOOP_BASELINE\` (each phase: baseline first)")"
    echo
    echo "| phase | binary | window | offered req/s | p50 | p99 | p99.9 | achieved req/s | errors | load tool CPU | server CPU | server µs/req |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s' "$rows"
  } | record
}
