# shellcheck shell=bash
# `scripts/bench.sh dashboard`: what open dashboards cost the server. Sourced by scripts/bench.sh
# (its helpers: setup, start_run, stop_run, log, die, ratio, machine, record).
#
# One `run --generate DASH_RATE` (default 5,000 events/s) on a fresh topic and database; its CPU
# (utime + stime from /proc/<pid>/stat) and VmRSS over DASH_SECONDS (default 30) with no dashboard,
# then over as long again with DASH_CLIENTS (default 100) WebSockets on /ws held by one client process
# (examples/dashboard_clients.rs, awc), in the same run. Goal: ≤ 5 % more CPU with 100 dashboards.
# --quick: 10 clients, 500 events/s, 8 s each (proves the harness, measures nothing).

dash_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
dash_rss_mib() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

# CPU % of one core used by $RUN_PID over $1 seconds; sets DASH_CPU and DASH_RSS.
dash_measure() {
  local seconds=$1 hz t0 t1
  hz=$(getconf CLK_TCK)
  t0=$(dash_ticks "$RUN_PID")
  sleep "$seconds"
  t1=$(dash_ticks "$RUN_PID")
  kill -0 "$RUN_PID" 2>/dev/null || die "run exited while measured"
  DASH_CPU=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v s="$seconds" 'BEGIN { printf "%.1f", (b - a) / hz / s * 100 }')
  DASH_RSS=$(dash_rss_mib "$RUN_PID")
}

bench_dashboard() {
  local rate="${DASH_RATE:-5000}" clients="${DASH_CLIENTS:-100}" seconds="${DASH_SECONDS:-30}"
  if [ "$QUICK" = 1 ]; then
    rate="${DASH_RATE:-500}" clients="${DASH_CLIENTS:-10}" seconds="${DASH_SECONDS:-8}"
  fi
  setup
  local profile_flag=()
  [ "$PROFILE" = release ] && profile_flag=(--release)
  cargo build -q "${profile_flag[@]}" --example dashboard_clients
  local client="$ROOT/target/$PROFILE/examples/dashboard_clients"
  start_run "$rate"
  # The generator and the windows settle before the first figure.
  sleep 3
  log "dashboard: $rate events/s, no dashboard, ${seconds} s"
  dash_measure "$seconds"
  local cpu0=$DASH_CPU rss0=$DASH_RSS
  log "dashboard: $clients dashboards on ${URL/http/ws}/ws, ${seconds} s"
  local out="$WORK/dashboard_clients.out"
  "$client" "${URL/http/ws}/ws" "$clients" "$((seconds + 4))" >"$out" 2>"$WORK/dashboard_clients.log" &
  local client_pid=$!
  local deadline=$((SECONDS + 60))
  until grep -q '^connected ' "$out" 2>/dev/null; do
    kill -0 "$client_pid" 2>/dev/null || { cat "$WORK/dashboard_clients.log" >&2; die "dashboard_clients exited"; }
    [ "$SECONDS" -lt "$deadline" ] || die "$clients dashboards not connected in 60 s"
    sleep 0.2
  done
  local connected
  connected=$(awk '/^connected / {print $2}' "$out")
  [ "$connected" = "$clients" ] || die "only $connected of $clients dashboards connected"
  # Past each socket's snapshot: the steady cost is the frames of every second.
  sleep 2
  dash_measure "$seconds"
  local cpu1=$DASH_CPU rss1=$DASH_RSS
  wait "$client_pid" || die "dashboard_clients failed: $(cat "$WORK/dashboard_clients.log")"
  local summary frames min_frames early
  summary=$(grep '^clients=' "$out")
  frames=$(sed -E 's/.* frames=([0-9]+).*/\1/' <<<"$summary")
  min_frames=$(sed -E 's/.*min_frames=([0-9]+).*/\1/' <<<"$summary")
  early=$(sed -E 's/.*closed_early=([0-9]+).*/\1/' <<<"$summary")
  stop_run
  cleanup_db
  [ "$early" = 0 ] || die "$early dashboards were closed early ($summary)"
  # Each socket is held seconds + 4 s: one frame a second, less a second or two at the edges.
  [ "$min_frames" -ge "$seconds" ] || die "a dashboard got only $min_frames frames in $((seconds + 4)) s ($summary)"
  local extra
  extra=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { if (a > 0) printf "%+.1f", (b - a) / a * 100; else print "n/a" }')
  local table
  table=$(
    printf '| dashboards | CPU %% of a core | VmRSS MiB |\n|---|---|---|\n'
    printf '| 0 | %s | %s |\n' "$cpu0" "$rss0"
    printf '| %s | %s | %s |\n' "$clients" "$cpu1" "$rss1"
  )
  echo "$table"
  echo "CPU ratio ($clients / 0 dashboards): $(ratio "$cpu1" "$cpu0") ($extra %; goal ≤ +5 %); frames: $frames ($min_frames at least per dashboard)"
  {
    echo
    echo "## dashboard ($(date -u +%Y-%m-%d), $PROFILE build, \`$BENCH_CMD\`)"
    echo
    machine
    echo "- \`run --generate $rate\`, ${seconds} s measured each way in the same run; dashboards held by examples/dashboard_clients (one process, awc)"
    echo
    echo "$table"
    echo
    echo "CPU with $clients dashboards against none: $(ratio "$cpu1" "$cpu0")× ($extra %; goal ≤ +5 %)."
  } | record
}
