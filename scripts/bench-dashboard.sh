# shellcheck shell=bash
# `scripts/bench.sh dashboard`: what open dashboards cost the server. Sourced by scripts/bench.sh
# (its helpers: setup, start_run, stop_run, log, die, ratio, machine, record).
#
# One `run --generate DASH_RATE` (default 5,000 events/s) on a fresh topic and database; its CPU
# (utime + stime from /proc/<pid>/stat) and VmRSS over DASH_SECONDS (default 20) with no dashboard,
# then over as long with DASH_CLIENTS (default 100) WebSockets on /ws held by one client process
# (examples/dashboard_clients.rs, awc), alternated DASH_ROUNDS times (default 4) in the same run, so a
# drift of the machine's load falls on both sides alike; the medians are compared. The generator's
# own CPU is most of the figure and varies by a few percent from one window to the next: the rounds'
# spread is printed beside the medians. Goal: ≤ 5 % more CPU with 100 dashboards.
# --quick: 10 clients, 500 events/s, 6 s windows, 1 round (proves the harness, measures nothing).

dash_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
dash_rss_mib() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
# Median of the numbers on stdin.
dash_median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.2f", (a[NR/2] + a[NR/2+1]) / 2}'; }

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

# Holds $2 dashboards on $1 while measuring $3 seconds; sets DASH_CPU, DASH_RSS and DASH_TALLY (the
# client's summary line), and checks every dashboard got its frames.
dash_with_clients() {
  local client=$1 clients=$2 seconds=$3
  local out="$WORK/dashboard_clients.out"
  # Gone before the client starts: its redirection truncates the file only once it runs, and the last
  # round's `connected` line must not be read meanwhile.
  rm -f "$out"
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
  wait "$client_pid" || die "dashboard_clients failed: $(cat "$WORK/dashboard_clients.log")"
  DASH_TALLY=$(grep '^clients=' "$out")
  local min_frames early
  min_frames=$(sed -E 's/.*min_frames=([0-9]+).*/\1/' <<<"$DASH_TALLY")
  early=$(sed -E 's/.*closed_early=([0-9]+).*/\1/' <<<"$DASH_TALLY")
  [ "$early" = 0 ] || die "$early dashboards were closed early ($DASH_TALLY)"
  # Each socket is held seconds + 4 s: one frame a second, less a second or two at the edges.
  [ "$min_frames" -ge "$seconds" ] || die "a dashboard got only $min_frames frames in $((seconds + 4)) s ($DASH_TALLY)"
}

bench_dashboard() {
  local rate="${DASH_RATE:-5000}" clients="${DASH_CLIENTS:-100}" seconds="${DASH_SECONDS:-20}" rounds="${DASH_ROUNDS:-4}"
  if [ "$QUICK" = 1 ]; then
    rate="${DASH_RATE:-500}" clients="${DASH_CLIENTS:-10}" seconds="${DASH_SECONDS:-6}" rounds="${DASH_ROUNDS:-1}"
  fi
  setup
  local profile_flag=()
  [ "$PROFILE" = release ] && profile_flag=(--release)
  cargo build -q "${profile_flag[@]}" --example dashboard_clients
  local client="$ROOT/target/$PROFILE/examples/dashboard_clients"
  start_run "$rate"
  # The generator and the windows settle before the first figure.
  sleep 3
  local load0 rows="" cpus0="" cpus1="" frames=0 bytes=0 round
  load0=$(cut -d' ' -f1-3 /proc/loadavg)
  for round in $(seq 1 "$rounds"); do
    log "dashboard: round $round/$rounds: $rate events/s, no dashboard, ${seconds} s"
    dash_measure "$seconds"
    local c0=$DASH_CPU r0=$DASH_RSS
    log "dashboard: round $round/$rounds: $clients dashboards on ${URL/http/ws}/ws, ${seconds} s"
    dash_with_clients "$client" "$clients" "$seconds"
    local c1=$DASH_CPU r1=$DASH_RSS
    cpus0+="$c0"$'\n' cpus1+="$c1"$'\n'
    frames=$((frames + $(sed -E 's/.* frames=([0-9]+).*/\1/' <<<"$DASH_TALLY")))
    bytes=$((bytes + $(sed -E 's/.* bytes=([0-9]+).*/\1/' <<<"$DASH_TALLY")))
    rows+="| $round | $c0 | $c1 | $r0 | $r1 |"$'\n'
  done
  stop_run
  cleanup_db
  local m0 m1 spread0 extra per_frame_us frame_bytes
  m0=$(printf '%s' "$cpus0" | dash_median)
  m1=$(printf '%s' "$cpus1" | dash_median)
  spread0=$(printf '%s' "$cpus0" | sort -n | awk 'NR==1 {lo=$1} {hi=$1} END {printf "%s–%s", lo, hi}')
  extra=$(awk -v a="$m0" -v b="$m1" 'BEGIN { if (a > 0) printf "%+.1f", (b - a) / a * 100; else print "n/a" }')
  # What one frame to one socket costs, from the medians: the extra CPU seconds over the frames sent.
  per_frame_us=$(awk -v a="$m0" -v b="$m1" -v f="$frames" -v r="$rounds" -v s="$seconds" -v n="$clients" \
    'BEGIN { printf "%.0f", (b - a) / 100 * s * 1e6 / (n * s) }')
  frame_bytes=$(awk -v b="$bytes" -v f="$frames" 'BEGIN { if (f > 0) printf "%.0f", b / f; else print 0 }')
  local table
  table=$(
    printf '| round | CPU %% of a core, 0 dashboards | %s dashboards | VmRSS MiB, 0 | %s |\n|---:|---:|---:|---:|---:|\n' "$clients" "$clients"
    printf '%s' "$rows"
    printf '| median | %s | %s | | |\n' "$m0" "$m1"
  )
  echo "$table"
  echo "CPU ($clients / 0 dashboards, medians of $rounds rounds): $(ratio "$m1" "$m0") ($extra %; goal ≤ +5 %); 0-dashboard rounds spread $spread0 %; frames: $frames of $frame_bytes bytes on average; ≈ $per_frame_us µs of CPU per frame and socket"
  {
    echo
    echo "## dashboard — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    machine
    echo "- \`$BENCH_CMD\` ($PROFILE build): \`run --generate $rate\`; $rounds rounds of ${seconds} s with no dashboard then ${seconds} s with $clients, held by examples/dashboard_clients (one process, awc, on the same 2 cores)"
    echo "- load average (1, 5, 15 min) when the measurements began: $load0; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "$table"
    echo
    echo "CPU with $clients dashboards against none, medians: $(ratio "$m1" "$m0")× ($extra %; goal ≤ +5 %). The 0-dashboard rounds spread $spread0 % of a core. $frames frames of $frame_bytes bytes on average reached the clients: ≈ $per_frame_us µs of the server's CPU per frame and socket."
  } | record
}
