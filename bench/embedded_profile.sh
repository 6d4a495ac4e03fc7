#!/bin/bash
# The embedded bench's ingest load against one fresh `run`, timed, with the server's and the
# client's CPU seconds and the writer's batch counts (docs/BENCHMARKS.md, "Where embedded ingest's
# time goes under the bench's load"). Not a benchmark of record: no baseline in the same run.
# Usage: bench/embedded_profile.sh BIN [EVENTS] [1 = perf record -F 499 -g]; EXTRA_ENV="K=V …" for
# the run's settings; SHOW_CHECKPOINTS=1 also prints the WAL checkpoint metrics. Run it under `flock /tmp/bench.lock`.
set -u
BIN=$1
N=${2:-1000000}
PERF=${3:-0}
W=$(mktemp -d)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
admin=$(free_port)
cd "$W" || exit 1
# shellcheck disable=SC2086 # EXTRA_ENV is a list of K=V words
DATABASE_URL="sqlite://$W/e.db" KAFKA_BROKERS="" REDIS_URL="" HTTP_ADDR="127.0.0.1:$port" ADMIN_ADDR="127.0.0.1:$admin" \
  GRPC_ADDR=127.0.0.1:0 LOG_FORMAT=json LOG_LEVEL=warn env ${EXTRA_ENV:-} "$BIN" run 2>"$W/run.log" &
RUN=$!
for _ in $(seq 1 600); do
  curl -fs "http://127.0.0.1:$port/stats/errors?window=1m" >/dev/null 2>&1 && break
  sleep 0.2
done
echo "run pid $RUN up; load $(cut -d' ' -f1-3 /proc/loadavg); work in $W"
PP=
if [ "$PERF" = 1 ]; then
  perf record -F 499 -g -p "$RUN" -o "$W/perf.data" 2>"$W/perf.err" &
  PP=$!
  sleep 0.5
fi
read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$RUN/stat")
t0=$(date +%s.%N)
/usr/bin/time -f "client: user %U sys %S wall %e" "$BIN" generate --rate 150000 --count "$N" --seed 21 \
  --late-ratio "${LATE_RATIO:-1}" --late-max 1h --to "http://127.0.0.1:$port" --batch 5000 --in-flight 8 2>"$W/gen.log"
t1=$(date +%s.%N)
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$RUN/stat")
tail -n 2 "$W/gen.log"
echo "ingest: $(awk -v a="$t0" -v b="$t1" -v n="$N" 'BEGIN { printf "%.2f s, %.0f events/s", b - a, n / (b - a) }');" \
  "server CPU user $((u1 - u0))/100 s, sys $((s1 - s0))/100 s"
if [ -n "$PP" ]; then
  kill -INT "$PP"
  wait "$PP"
fi
curl -s "http://127.0.0.1:$admin/metrics" |
  grep -E "^log_analyzer_writer_batch_(events|seconds)_(sum|count)|^log_analyzer_sqlite_index_lag"
[ -n "${SHOW_CHECKPOINTS:-}" ] && curl -s "http://127.0.0.1:$admin/metrics" | grep -E "^log_analyzer_sqlite_(checkpoint|wal)"
kill "$RUN"
wait "$RUN"
[ "$PERF" = 1 ] || [ -n "${KEEP:-}" ] || rm -rf "$W"
