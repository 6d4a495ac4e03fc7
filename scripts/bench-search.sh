# shellcheck shell=bash
# `scripts/bench.sh search`: the newest-100 page of GET /logs (DESIGN §13) over BENCH_SEARCH_ROWS stored
# rows (default 10,000,000; --quick: 100,000), against the SQL a user would write, and what each index the
# search may add costs the ingest. Sourced by scripts/bench.sh (its helpers: setup, cleanup_db, log, die,
# now, secs, rate, ratio, machine, record, start_api, stop_run, and GEN, BIN, WORK, QUICK, DATABASE_URL) and uses
# bench-openloop.sh's vegeta and bench-ingest.sh's ingest runs.
#
# 1. Dataset. A corpus of real tokenizer output: the generator's events (`generate --to csv`, seed 18)
#    and the Loghub samples (`log-analyzer parse` of every line, /work/shared/data/loghub or
#    BENCH_LOGHUB), so `tokens` is the project's own and the vocabulary real. One INSERT … SELECT over
#    generate_series then picks a corpus line per row by a seeded hash (the same rows every run), spreads
#    the rows evenly over the last BENCH_SEARCH_DAYS days (partitions by ensure_logs_partition) and
#    appends a per-row id (`[r0001f3a]`, one more token) as real lines carry request ids. The indexes the
#    migrations made are dropped for the load and built after it (a bulk load into a GIN is several
#    times slower), then VACUUM ANALYZE. A sample of rows is re-tokenized by `log-analyzer parse` and must
#    give exactly the stored `tokens`.
# 2. Query latency at a fixed offered rate (open loop). When the `api` process answers GET /logs (route
#    mode), vegeta asks it; while the route answers 404 (before issue #18's route is merged: SQL mode),
#    pgbench -R sends the candidate SQL of the route over BENCH_SEARCH_CONNECTIONS connections (latency
#    counted from each query's scheduled start, so queueing counts). Three questions: a selective token
#    (a word whose share is nearest 0.5 %, ≤ 1 %), a common one (the commonest word; a stop word only when
#    no other reaches 30 %, which with this corpus makes it `in`, ~32 %), and the common one within the
#    service with most such errors at level error+. The output says which mode ran.
# 3. Baseline: `message ILIKE '%tok%' ORDER BY ts DESC LIMIT 100` (and with service and level), timed
#    through one psql session as many times as the route was asked, at most BENCH_SEARCH_BASELINE_SECONDS
#    per question; on the same table with the same indexes.
# 4. Index trials on the same dataset: + btree (service, ts) for the service question, + pg_trgm GIN on
#    message for the ILIKE baseline (what a trigram index would buy), each with its build time and size.
# 5. Ingest cost: BENCH_SEARCH_INGEST_EVENTS events (the dataset's own rows as JSON, produced with kcat)
#    stored by `log-analyzer ingest` from start to zero lag, into an empty `logs` with only the BRIN, then
#    with each candidate index alone, then with every index the migrations make; BRIN only again at the
#    end as the machine's noise.
#
# Settings: BENCH_SEARCH_ROWS, BENCH_SEARCH_DAYS (7), BENCH_SEARCH_RATE (requests/s, default 20; --quick
# 10), BENCH_SEARCH_SECONDS (per step, 30; --quick 2), BENCH_SEARCH_CONNECTIONS (8),
# BENCH_SEARCH_BASELINE_SECONDS (60; --quick 2), BENCH_SEARCH_INGEST_EVENTS (1,000,000; --quick 5,000),
# BENCH_SEARCH_SELECTIVE / BENCH_SEARCH_COMMON / BENCH_SEARCH_SERVICE (override the chosen token or service).

search_sql() { psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" "$@"; }
search_value() { psql -X -qtA -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1"; }
# ratio, where a baseline that never finished within its cap is ">cap".
search_ratio() {
  if [ "${1#>}" != "$1" ]; then echo ">$(ratio "${1#>}" "$2")"; else ratio "$1" "$2"; fi
}

# The corpus: every line with the tokens the project's own code gave it, ids from 0 in a fixed order.
search_corpus() {
  local loghub=${BENCH_LOGHUB:-/work/shared/data/loghub} system file
  [ -d "$loghub" ] || die "no Loghub samples in $loghub (BENCH_LOGHUB)"
  # 24,000 generator lines beside Loghub's 16,000: 60 % of the rows are the generator's.
  "$GEN" generate --rate 0 --count 24000 --seed 18 --to csv:"$WORK/corpus-gen.csv" 2>/dev/null ||
    die "generate --to csv failed"
  : >"$WORK/corpus-loghub.ndjson"
  for file in "$loghub"/*/*_2k.log; do
    system=$(basename "$(dirname "$file")")
    # parse exits 1 when a line is rejected; the rejects are printed too and left out below.
    "$GEN" parse --service "${system,,}" "$file" >>"$WORK/corpus-loghub.ndjson" 2>/dev/null || true
  done
  search_sql <<SQL
CREATE TABLE corpus_gen (LIKE logs INCLUDING DEFAULTS);
CREATE TABLE corpus_parsed (n bigserial, doc jsonb NOT NULL);
\\copy corpus_gen (ts, level, service, user_id, message, tokens, attrs, topic, "partition", "offset") FROM '$WORK/corpus-gen.csv' CSV
-- One JSON line per field: quote and delimiter bytes that JSON never holds unescaped.
\\copy corpus_parsed (doc) FROM '$WORK/corpus-loghub.ndjson' WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')
CREATE TABLE search_corpus AS
SELECT (row_number() OVER (ORDER BY src, n) - 1)::int AS id, level, service, user_id, message, tokens, attrs
FROM (
  SELECT 0 AS src, "offset" AS n, level, service, user_id, message, tokens, attrs FROM corpus_gen
  UNION ALL
  SELECT 1, n, (array_position(ARRAY['trace','debug','info','warn','error','fatal'], e->>'level') - 1)::smallint, e->>'service', e->>'user_id', e->>'message',
         ARRAY(SELECT jsonb_array_elements_text(e->'tokens')), COALESCE(e->'attrs', '{}')
  FROM (SELECT n, doc->'event' AS e FROM corpus_parsed) p WHERE e IS NOT NULL
) c;
CREATE UNIQUE INDEX ON search_corpus (id);
ANALYZE search_corpus;
SQL
}

# Indexes on `logs` the migrations made, other than the BRIN: "name<TAB>kind<TAB>create<TAB>drop" lines.
search_index_defs() {
  search_value "
SELECT c.relname, CASE WHEN d ~* 'gin_trgm_ops' THEN 'trigram'
                       WHEN d ~* 'USING btree \(service' THEN 'service_ts'
                       ELSE 'base' END,
       -- A partitioned index's definition says ON ONLY (the parent alone); rebuilt, it must cover the partitions.
       COALESCE('ALTER TABLE logs ADD CONSTRAINT ' || quote_ident(k.conname) || ' ' || pg_get_constraintdef(k.oid),
                replace(d, ' ON ONLY ', ' ON ')),
       COALESCE('ALTER TABLE logs DROP CONSTRAINT ' || quote_ident(k.conname), 'DROP INDEX ' || quote_ident(c.relname))
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
CROSS JOIN LATERAL pg_get_indexdef(i.indexrelid) d
LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid
WHERE i.indrelid = 'logs'::regclass AND d !~* 'USING brin'
ORDER BY c.relname" | tr '|' '\t'
}

# Builds one index (or constraint) on the whole table; prints "seconds bytes".
search_build_index() {
  local create=$1 t0 t1 name
  t0=$(now)
  search_sql -c "SET maintenance_work_mem = '512MB'" -c "$create"
  t1=$(now)
  name=$(search_value "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                       WHERE i.indrelid = 'logs'::regclass ORDER BY c.oid DESC LIMIT 1")
  echo "$(secs "$t0" "$t1") $(search_value "SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree('$name')")"
}

search_load() {
  local rows=$1 days=$2
  search_sql -v rows="$rows" -v days="$days" <<'SQL'
SET TIME ZONE 'UTC';
SELECT count(ensure_logs_partition(d::date))
FROM generate_series((now() - :days * interval '1 day')::date, now()::date, interval '1 day') d \gset
SELECT count(*) AS corpus FROM search_corpus \gset
-- Newest row a minute ago, oldest :days days before it, evenly spaced, inserted oldest first.
INSERT INTO logs (ts, level, service, user_id, message, tokens, attrs, topic, "partition", "offset")
SELECT date_trunc('second', now()) - interval '1 minute'
         - (:rows - 1 - s.g) * (:days * 86400000000.0 / :rows) * interval '1 microsecond',
       c.level, c.service, c.user_id, c.message || ' [' || s.rid || ']', c.tokens || s.rid, c.attrs,
       'bench_search', (s.g % 6)::int, s.g / 6
FROM (SELECT g, 'r' || lpad(to_hex(g), 7, '0') AS rid,
             (hashint8extended(g, 18) & 9223372036854775807) % :corpus AS pick
      FROM generate_series(0::bigint, :rows - 1) g) s
JOIN search_corpus c ON c.id = s.pick
ORDER BY s.g;
SQL
}

# Re-tokenizes a sample of stored messages with `log-analyzer parse`; dies unless every one gives
# exactly the stored tokens (same tokens, same order). Prints the sample size.
search_check_tokens() {
  local sample=$1
  search_value "SELECT json_build_object('message', message, 'service', 'check')
                FROM logs WHERE \"offset\" % greatest(1, (SELECT count(*) FROM logs) / 6 / $sample) = 0
                ORDER BY \"partition\", \"offset\" LIMIT $sample" >"$WORK/check.ndjson"
  search_value "SELECT array_to_json(tokens)
                FROM logs WHERE \"offset\" % greatest(1, (SELECT count(*) FROM logs) / 6 / $sample) = 0
                ORDER BY \"partition\", \"offset\" LIMIT $sample" >"$WORK/check.stored"
  "$GEN" parse <"$WORK/check.ndjson" >"$WORK/check.parsed" 2>/dev/null || die "log-analyzer parse rejected a stored message"
  python3 - "$WORK/check.parsed" "$WORK/check.stored" <<'PY' || die "the dataset's tokens differ from the tokenizer's"
import json, sys
parsed = [json.loads(l)["event"]["tokens"] for l in open(sys.argv[1])]
stored = [json.loads(l) for l in open(sys.argv[2])]
bad = [(p, s) for p, s in zip(parsed, stored) if p != s]
if len(parsed) != len(stored) or not parsed or bad:
    print(f"checked {len(parsed)} against {len(stored)}; first difference: {bad[:1]}", file=sys.stderr)
    sys.exit(1)
print(len(parsed))
PY
}

# Latency lines "end_seconds latency_ms ok" on stdin → "p50 p99 p99.9 achieved_rps ok errors".
search_stats() {
  sort -k2,2g | awk '
    { n++; if ($3 == 1) { ok++; lat[ok] = $2 } else bad++
      if (first == "" || $1 < first) first = $1; if ($1 > last) last = $1 }
    function pct(p,  i) { if (!ok) return "nan"; i = int(ok * p / 100 + 0.999999); if (i < 1) i = 1; if (i > ok) i = ok; return lat[i] }
    END { span = last - first; printf "%.1f %.1f %.1f %.1f %d %d\n", pct(50), pct(99), pct(99.9), (span > 0 ? (n - 1) / span : 0), ok, bad }'
}

# One open-loop step against the route: $1 path and query, $2 req/s, $3 seconds.
search_route_step() {
  printf 'GET %s%s\n' "$URL" "$1" >"$WORK/search.targets"
  "$VEGETA" attack -targets="$WORK/search.targets" -rate="$2/1s" -duration="$3s" -timeout=30s -keepalive=true \
    -workers="$SEARCH_CONNECTIONS" -max-connections="$SEARCH_CONNECTIONS" >"$WORK/search.bin" 2>"$WORK/search.err" ||
    die "vegeta attack failed: $(head -c 300 "$WORK/search.err")"
  # vegeta's CSV: timestamp (ns), status code, latency (ns), bytes out, bytes in, error, …
  "$VEGETA" encode --to csv <"$WORK/search.bin" |
    awk -F, '{ printf "%.6f %.3f %d\n", ($1 + $3) / 1e9, $3 / 1e6, ($2 >= 200 && $2 < 300 && $6 == "") }' | search_stats
}

# One open-loop step of SQL: $1 the statement, $2 transactions/s, $3 seconds.
search_sql_step() {
  printf '%s\n' "$1" >"$WORK/search.sql"
  rm -f "$WORK"/pgbench_log.*
  (cd "$WORK" && pgbench -n -c "$SEARCH_CONNECTIONS" -j 1 -R "$2" -T "$3" -f search.sql --log "$DATABASE_URL") \
    >"$WORK/pgbench.out" 2>&1 || die "pgbench failed: $(tail -n 5 "$WORK/pgbench.out")"
  # Log: client, transaction, latency µs (with --rate: from the scheduled start), script, epoch s, µs, lag.
  cat "$WORK"/pgbench_log.* | awk '{ ok = ($3 ~ /^[0-9]+$/); printf "%.6f %.3f %d\n", $5 + $6 / 1e6, (ok ? $3 / 1000 : 0), ok }' | search_stats
}

# The question through the route or its SQL: $1 token, $2 service ('' for none); rate, seconds.
search_step() {
  local tok=$1 service=$2 offered=$3 seconds=$4
  if [ "$SEARCH_MODE" = route ]; then
    local query="/logs?q=$tok&limit=100"
    [ -z "$service" ] ||
      query+="&service=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$service")&level=error%2B"
    search_route_step "$query" "$offered" "$seconds"
  else
    search_sql_step "$(search_candidate_sql "$tok" "$service")" "$offered" "$seconds"
  fi
}

# What GET /logs asks PostgreSQL, in the search core's order (ts, partition, offset, topic, newest first).
search_candidate_sql() {
  local where="tokens @> ARRAY['$1']::text[]"
  [ -z "$2" ] || where+=" AND service = '${2//\'/\'\'}' AND level = ANY (ARRAY[4, 5]::smallint[])"
  echo "SELECT ts, level, service, user_id, message, attrs, topic, \"partition\", \"offset\" FROM logs WHERE $where ORDER BY ts DESC, \"partition\" DESC, \"offset\" DESC, topic DESC LIMIT 100;"
}

search_baseline_sql() {
  local where="message ILIKE '%$1%'"
  [ -z "$2" ] || where+=" AND service = '${2//\'/\'\'}' AND level >= 4"
  echo "SELECT ts, level, service, user_id, message, attrs, topic, \"partition\", \"offset\" FROM logs WHERE $where ORDER BY ts DESC LIMIT 100;"
}

# The baseline, closed loop through one psql session: $1 token, $2 service, $3 times, $4 at most seconds.
# Prints "p50 p99 p99.9 runs".
search_baseline() {
  local sql times=$3 cap=$4 i
  sql=$(search_baseline_sql "$1" "$2")
  {
    echo "SET statement_timeout = '${cap}s';"
    echo '\timing on'
    echo '\o /dev/null'
    for ((i = 0; i < times; i++)); do echo "$sql"; done
  } >"$WORK/baseline.sql"
  PGAPPNAME=bench_search_baseline timeout "$cap" psql -X -q "$DATABASE_URL" -f "$WORK/baseline.sql" \
    >"$WORK/baseline.out" 2>"$WORK/baseline.err" || true
  # A killed psql leaves its query running on the server until statement_timeout: stop it now.
  search_value "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity
                WHERE application_name = 'bench_search_baseline' AND datname = current_database()" >/dev/null
  sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' "$WORK/baseline.out" | sed 1d | awk '{ print 0, $1, 1 }' >"$WORK/baseline.lat"
  local runs
  runs=$(wc -l <"$WORK/baseline.lat")
  if [ "$runs" = 0 ]; then
    echo ">${cap}000 >${cap}000 >${cap}000 0"
  else
    search_stats <"$WORK/baseline.lat" | awk -v n="$runs" '{ print $1, $2, $3, n }'
  fi
}

# The plan's first nodes, one line: what PostgreSQL chose for a question (partition scans repeat).
search_plan() {
  search_value "EXPLAIN (COSTS OFF) ${1%;}" | grep -E '^[A-Z]|->' |
    sed -E 's/^ *(->  )?//; s/ (on|using) logs_[0-9]{8}\b.*//; s/logs_[0-9]{8}_/logs_<day>_/g; s/ +$//' |
    awk '!seen[$0]++' | head -n 6 | awk '{ printf "%s%s", (NR > 1 ? " → " : ""), $0 } END { print "" }'
}

# Starts `api` and decides the mode: route when GET /logs answers 200, SQL when it answers 404.
search_start_api() {
  local code
  start_api api
  # As `run`'s: stop_run (bench.sh) stops it.
  # shellcheck disable=SC2034
  RUN_PID=$API_PID
  URL=$API_URL
  code=$(curl -s -o "$WORK/route.json" -w '%{http_code}' "$URL/logs?q=$SEARCH_SELECTIVE&limit=100")
  case "$code" in
  200) SEARCH_MODE=route ;;
  404)
    SEARCH_MODE=sql
    stop_run
    ;;
  *) die "GET /logs answered $code: $(head -c 300 "$WORK/route.json")" ;;
  esac
}

# Tokens and service of the three questions, chosen from the corpus (each row picks a corpus line
# uniformly, so its shares are the dataset's); the exact shares are counted after the load.
search_choose() {
  local stop
  stop=$(sed -n '/^pub const STOP_WORDS/,/\];/p' actors/src/domain/tokens.rs | grep -o '"[a-z]*"' | tr '"' "'" | paste -sd,)
  SEARCH_SELECTIVE=${BENCH_SEARCH_SELECTIVE:-$(search_value "
    WITH t AS (SELECT tok, count(*)::float8 / (SELECT count(*) FROM search_corpus) AS share
               FROM search_corpus, unnest(tokens) tok GROUP BY tok)
    SELECT tok FROM t WHERE tok ~ '^[a-z][a-z_]{3,}$' AND tok NOT IN ($stop) AND share <= 0.01
    ORDER BY abs(share - 0.005), tok LIMIT 1")}
  # A stop word only when no other word reaches 30 % (the search does not skip stop words).
  SEARCH_COMMON=${BENCH_SEARCH_COMMON:-$(search_value "
    SELECT tok FROM search_corpus, unnest(tokens) tok WHERE tok ~ '^[a-z][a-z_]+$' GROUP BY tok
    ORDER BY (tok NOT IN ($stop) AND count(*) >= 0.3 * (SELECT count(*) FROM search_corpus)) DESC, count(*) DESC, tok
    LIMIT 1")}
  SEARCH_SERVICE=${BENCH_SEARCH_SERVICE:-$(search_value "
    SELECT service FROM search_corpus WHERE level >= 4 GROUP BY service
    ORDER BY count(*) FILTER (WHERE tokens @> ARRAY['$SEARCH_COMMON']) DESC, count(*) DESC, service LIMIT 1")}
}

bench_search() {
  command -v pgbench >/dev/null || die "pgbench is not installed (Debian: postgresql-client)"
  VEGETA=$(openloop_vegeta)
  ingest2_kcat
  local rows="${BENCH_SEARCH_ROWS:-10000000}" days="${BENCH_SEARCH_DAYS:-7}" offered="${BENCH_SEARCH_RATE:-20}"
  local seconds="${BENCH_SEARCH_SECONDS:-30}" cap="${BENCH_SEARCH_BASELINE_SECONDS:-60}"
  local ingest_events="${BENCH_SEARCH_INGEST_EVENTS:-1000000}" warm=3
  SEARCH_CONNECTIONS="${BENCH_SEARCH_CONNECTIONS:-8}"
  if [ "$QUICK" = 1 ]; then
    rows="${BENCH_SEARCH_ROWS:-100000}" offered="${BENCH_SEARCH_RATE:-10}" seconds="${BENCH_SEARCH_SECONDS:-2}"
    cap="${BENCH_SEARCH_BASELINE_SECONDS:-2}" ingest_events="${BENCH_SEARCH_INGEST_EVENTS:-5000}" warm=1
  fi
  [ "$ingest_events" -le "$rows" ] || die "BENCH_SEARCH_INGEST_EVENTS ($ingest_events) exceeds the dataset ($rows rows)"
  local started=$SECONDS
  setup
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  [ "$(search_value "SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_trgm'")" = 1 ] ||
    die "the pg_trgm extension is not available (Debian: it ships with the postgresql package)"
  search_sql -c "CREATE EXTENSION IF NOT EXISTS pg_trgm"

  # 1. The dataset, with the migrations' indexes set aside for the load.
  local migrated name kind create drop
  migrated=$(search_index_defs)
  while IFS=$'\t' read -r name kind create drop; do
    [ -z "$name" ] || search_sql -c "$drop"
  done <<<"$migrated"
  log "corpus: generator events (seed 18) and the Loghub samples through log-analyzer parse"
  search_corpus
  local corpus
  corpus=$(search_value "SELECT count(*) FROM search_corpus")
  search_choose
  log "loading $rows rows over $days days (corpus of $corpus lines)"
  local t0 t1 load_s
  t0=$(now)
  search_load "$rows" "$days"
  t1=$(now)
  load_s=$(secs "$t0" "$t1")
  local checked
  checked=$(search_check_tokens 2000)
  log "tokens of $checked sampled rows equal log-analyzer parse's"

  # The search's indexes: the migrations' (other than the trials below), and a GIN on tokens and a
  # btree on ts when they have none (before GET /logs is merged they have neither).
  local base_defs="" service_def="" trigram_def="" index_rows=""
  while IFS=$'\t' read -r name kind create drop; do
    [ -n "$name" ] || continue
    case "$kind" in
    base) base_defs+="$create"$'\n' ;;
    service_ts) service_def=$create ;;
    trigram) trigram_def=$create ;;
    esac
  done <<<"$migrated"
  local base_note="the migrations' indexes"
  if ! grep -qiE 'USING gin \(tokens' <<<"$base_defs"; then
    base_defs+="CREATE INDEX logs_bench_tokens ON logs USING gin (tokens)"$'\n'
    base_note="GIN on tokens (added by the bench)"
  fi
  if ! grep -qiE 'USING btree \(ts' <<<"$base_defs"; then
    base_defs+="CREATE INDEX logs_bench_ts ON logs (ts)"$'\n'
    base_note+=", btree on ts (added by the bench)"
  fi
  [ -n "$service_def" ] || service_def="CREATE INDEX logs_bench_service_ts ON logs (service, ts)"
  [ -n "$trigram_def" ] || trigram_def="CREATE INDEX logs_bench_message_trgm ON logs USING gin (message gin_trgm_ops)"
  local def built
  while IFS= read -r def; do
    [ -n "$def" ] || continue
    log "building: $def"
    built=$(search_build_index "$def")
    index_rows+="$def"$'\t'"$built"$'\n'
  done <<<"$base_defs"
  log "VACUUM ANALYZE logs"
  search_sql -c "VACUUM ANALYZE logs"
  local table_bytes sel_n com_n svc_n sel_pct com_pct
  table_bytes=$(search_value "SELECT sum(pg_table_size(relid)) FROM pg_partition_tree('logs')")
  sel_n=$(search_value "SELECT count(*) FROM logs WHERE tokens @> ARRAY['$SEARCH_SELECTIVE']")
  com_n=$(search_value "SELECT count(*) FROM logs WHERE tokens @> ARRAY['$SEARCH_COMMON']")
  svc_n=$(search_value "SELECT count(*) FROM logs WHERE tokens @> ARRAY['$SEARCH_COMMON'] AND service = '${SEARCH_SERVICE//\'/\'\'}' AND level >= 4")
  sel_pct=$(awk -v a="$sel_n" -v n="$rows" 'BEGIN { printf "%.3f", 100 * a / n }')
  com_pct=$(awk -v a="$com_n" -v n="$rows" 'BEGIN { printf "%.1f", 100 * a / n }')
  printf '\nsearch dataset: %s rows over %s days (%s MiB heap), loaded in %s s; %s sampled rows re-tokenized: equal\n' \
    "$rows" "$days" "$((table_bytes / 1048576))" "$load_s" "$checked"
  printf 'selective token %-20s %9s rows (%s %%)\n' "'$SEARCH_SELECTIVE'" "$sel_n" "$sel_pct"
  printf 'common token    %-20s %9s rows (%s %%)\n' "'$SEARCH_COMMON'" "$com_n" "$com_pct"
  printf "service question: '%s' in service '%s' at error+: %s rows\n" "$SEARCH_COMMON" "$SEARCH_SERVICE" "$svc_n"
  awk -v n="$rows" -v p="$sel_pct" -v c="$com_pct" 'BEGIN { if (p > 1 || c < 30) exit 1 }' ||
    log "WARNING: the selective token should hold ≤ 1 % of rows and the common one ≥ 30 % (BENCH_SEARCH_SELECTIVE/COMMON)"

  # 2 and 3. The three questions on the search's indexes, then the baselines.
  search_start_api
  local mode_text="SQL mode: GET /logs answered 404, so pgbench -R sent the route's candidate SQL (no HTTP, no JSON)"
  [ "$SEARCH_MODE" = route ] && mode_text="route mode: vegeta asked GET /logs of a \`log-analyzer api\` process"
  log "$mode_text"
  if [ "$SEARCH_MODE" = route ]; then
    # The route's first page must hold the newest matching row SQL finds (its JSON shape is the route's;
    # only the offset is looked for).
    local newest
    newest=$(search_value "SELECT \"offset\" FROM logs WHERE tokens @> ARRAY['$SEARCH_SELECTIVE']
                           ORDER BY ts DESC, \"partition\" DESC, \"offset\" DESC, topic DESC LIMIT 1")
    if ! grep -qE "\"offset\" *: *$newest([^0-9]|\$)" "$WORK/route.json"; then
      log "WARNING: GET /logs?q=$SEARCH_SELECTIVE lacks the newest matching row (offset $newest): $(head -c 200 "$WORK/route.json")"
    fi
    if grep -qE '"truncated" *: *true' "$WORK/route.json"; then
      log "WARNING: GET /logs?q=$SEARCH_SELECTIVE answered \"truncated\": true (SEARCH_MAX_SCAN): its latency is the bound's"
    fi
  fi
  local label p50 p99 p999 achieved ok errors
  local -A P50 P99 P999 ACH OK ERR
  search_measure() { # key token service
    local out
    search_step "$2" "$3" "$offered" "$warm" >/dev/null
    out=$(search_step "$2" "$3" "$offered" "$seconds")
    read -r p50 p99 p999 achieved ok errors <<<"$out"
    P50[$1]=$p50 P99[$1]=$p99 P999[$1]=$p999 ACH[$1]=$achieved OK[$1]=$ok ERR[$1]=$errors
    [ "$QUICK" = 0 ] || [ "$errors" = 0 ] || die "search $1: $errors requests failed"
  }
  local -A B50 B99 BRUNS
  search_measure_baseline() { # key token service
    local times=$((offered * seconds)) out
    out=$(search_baseline "$2" "$3" "$times" "$cap")
    read -r p50 p99 p999 ok <<<"$out"
    B50[$1]=$p50 B99[$1]=$p99 BRUNS[$1]=$ok
  }
  log "questions at $offered req/s for $seconds s each"
  search_measure selective "$SEARCH_SELECTIVE" ""
  search_measure common "$SEARCH_COMMON" ""
  search_measure service "$SEARCH_COMMON" "$SEARCH_SERVICE"
  local -A PLAN
  PLAN[selective]=$(search_plan "$(search_candidate_sql "$SEARCH_SELECTIVE" "")")
  PLAN[common]=$(search_plan "$(search_candidate_sql "$SEARCH_COMMON" "")")
  PLAN[service]=$(search_plan "$(search_candidate_sql "$SEARCH_COMMON" "$SEARCH_SERVICE")")
  PLAN[ilike_selective]=$(search_plan "$(search_baseline_sql "$SEARCH_SELECTIVE" "")")
  PLAN[ilike_common]=$(search_plan "$(search_baseline_sql "$SEARCH_COMMON" "")")
  log "baselines: ILIKE, at most $cap s each"
  search_measure_baseline selective "$SEARCH_SELECTIVE" ""
  search_measure_baseline common "$SEARCH_COMMON" ""
  search_measure_baseline service "$SEARCH_COMMON" "$SEARCH_SERVICE"

  # 4. The trials: (service, ts) for the service question, then the trigram GIN for ILIKE.
  log "trial: $service_def"
  local service_built trigram_built
  service_built=$(search_build_index "$service_def")
  search_sql -c "ANALYZE logs"
  search_measure service_idx "$SEARCH_COMMON" "$SEARCH_SERVICE"
  PLAN[service_idx]=$(search_plan "$(search_candidate_sql "$SEARCH_COMMON" "$SEARCH_SERVICE")")
  search_measure_baseline service_idx "$SEARCH_COMMON" "$SEARCH_SERVICE"
  log "trial: $trigram_def"
  trigram_built=$(search_build_index "$trigram_def")
  search_sql -c "ANALYZE logs"
  search_measure_baseline selective_trgm "$SEARCH_SELECTIVE" ""
  search_measure_baseline common_trgm "$SEARCH_COMMON" ""
  search_measure_baseline service_trgm "$SEARCH_COMMON" "$SEARCH_SERVICE"
  PLAN[ilike_trgm]=$(search_plan "$(search_baseline_sql "$SEARCH_SELECTIVE" "")")
  stop_run

  # 5. Ingest cost: the dataset's oldest rows (with their attrs) as the JSON a service would send.
  log "exporting $ingest_events rows as JSON events"
  psql -X -qtA -v ON_ERROR_STOP=1 -v FETCH_COUNT=10000 "$DATABASE_URL" -c "
    SELECT jsonb_strip_nulls(attrs || jsonb_build_object('ts', ts, 'service', service, 'user_id', user_id, 'message', message,
             'level', (ARRAY['trace', 'debug', 'info', 'warn', 'error', 'fatal'])[level + 1]))
    FROM logs ORDER BY ts LIMIT $ingest_events" >"$WORK/search-events.ndjson"
  cleanup_db
  setup
  search_sql -c "CREATE EXTENSION IF NOT EXISTS pg_trgm"
  local ingest_migrated
  ingest_migrated=$(search_index_defs)
  while IFS=$'\t' read -r name kind create drop; do
    [ -z "$name" ] || search_sql -c "$drop"
  done <<<"$ingest_migrated"
  log "producing $ingest_events events to $KAFKA_TOPIC with kcat"
  kcat -P -b "$KAFKA_BROKERS" -t "$KAFKA_TOPIC" -l "$WORK/search-events.ndjson" || die "kcat -P failed"
  local EVENTS=$ingest_events
  local -a trials=(
    "BRIN on ts only (as the table is today)|"
    "+ GIN on tokens (fastupdate on, the default)|CREATE INDEX ON logs USING gin (tokens)"
    "+ GIN on tokens, fastupdate = off|CREATE INDEX ON logs USING gin (tokens) WITH (fastupdate = off)"
    "+ btree on ts|CREATE INDEX ON logs (ts)"
    "+ btree on (service, ts)|CREATE INDEX ON logs (service, ts)"
    "+ btree on (topic, partition, offset)|CREATE INDEX ON logs (topic, \"partition\", \"offset\")"
    "+ pg_trgm GIN on message|CREATE INDEX ON logs USING gin (message gin_trgm_ops)"
  )
  if [ -n "$ingest_migrated" ]; then
    trials+=("+ every index the migrations make|$(cut -f3 <<<"$ingest_migrated" | paste -sd ';')")
  fi
  trials+=("BRIN on ts only, again (the machine's noise)|")
  local trial i=0 ingest_rows="" none_rate="" rate_now
  local -A INGEST_RATE
  printf '\n%-52s %10s %8s %8s %10s\n' "ingest of $ingest_events events (the dataset's rows)" events/s seconds "CPU s" "vs BRIN"
  for trial in "${trials[@]}"; do
    label=${trial%%|*}
    def=${trial#*|}
    [ -z "$def" ] || search_sql -c "$def"
    ingest2_run "search$((i++))" on
    rate_now=$(rate "$EVENTS" "$INGEST_S")
    [ -n "$none_rate" ] || none_rate=$rate_now
    printf '%-52s %10s %8s %8s %10s\n' "$label" "$rate_now" "$INGEST_S" "$INGEST_CPU" "$(ratio "$rate_now" "$none_rate")"
    ingest_rows+="| $label | $rate_now | $INGEST_S | $INGEST_CPU | $(ratio "$rate_now" "$none_rate") |"$'\n'
    INGEST_RATE[$label]=$rate_now
    # Each trial alone: drop every index but the BRIN again.
    while IFS=$'\t' read -r name kind create drop; do
      [ -z "$name" ] || search_sql -c "$drop"
    done < <(search_index_defs)
  done
  cleanup_db

  # The figures.
  local goal_sel goal_com
  goal_sel=$(awk -v p="${P99[selective]}" 'BEGIN { print (p + 0 <= 50 && p != "nan") ? "met" : "missed" }')
  goal_com=$(awk -v p="${P99[common]}" 'BEGIN { print (p + 0 <= 200 && p != "nan") ? "met" : "missed" }')
  [ "$QUICK" = 0 ] || log "--quick: sizes too small and the build unoptimised, so the goals are not judged by this run"
  printf '\n%s\n' "$mode_text"
  printf '%-34s %8s %8s %8s %9s %6s %7s | %-24s %7s\n' "newest 100, $offered req/s offered" p50_ms p99_ms p99.9_ms achieved ok errors "ILIKE baseline p50/p99" "p99 ×"
  for key in selective common service service_idx; do
    case $key in
    selective) label="selective '$SEARCH_SELECTIVE'" ;;
    common) label="common '$SEARCH_COMMON'" ;;
    service) label="common + service + error+" ;;
    service_idx) label="  the same + btree (service, ts)" ;;
    esac
    printf '%-34s %8s %8s %8s %9s %6s %7s | %-24s %7s\n' "$label" "${P50[$key]}" "${P99[$key]}" "${P999[$key]}" "${ACH[$key]}" "${OK[$key]}" "${ERR[$key]}" \
      "${B50[$key]} / ${B99[$key]} (${BRUNS[$key]}×)" "$(search_ratio "${B99[$key]}" "${P99[$key]}")"
  done
  printf 'goals: selective p99 ≤ 50 ms: %s; common p99 ≤ 200 ms: %s\n' "$goal_sel" "$goal_com"
  printf '\nplans (EXPLAIN of the candidate SQL; in route mode, what the route is expected to run)\n'
  for key in selective common service service_idx ilike_selective ilike_common ilike_trgm; do
    printf '  %-16s %s\n' "$key" "${PLAN[$key]}"
  done
  local -a sb tb
  read -r -a sb <<<"$service_built"
  read -r -a tb <<<"$trigram_built"
  local svc_cost trgm_cost
  svc_cost=$(ratio "${INGEST_RATE["+ btree on (service, ts)"]}" "$none_rate")
  trgm_cost=$(ratio "${INGEST_RATE["+ pg_trgm GIN on message"]}" "$none_rate")
  printf '\nverdict figures\n'
  printf 'btree (service, ts): service question p99 %s → %s ms, its ILIKE p50 %s → %s ms; ingest × %s; %s MiB, built in %s s\n' \
    "${P99[service]}" "${P99[service_idx]}" "${B50[service]}" "${B50[service_idx]}" "$svc_cost" "$((sb[1] / 1048576))" "${sb[0]}"
  printf 'pg_trgm GIN on message: ILIKE p50 selective %s → %s, common %s → %s, service %s → %s ms; ingest × %s; %s MiB, built in %s s\n' \
    "${B50[selective]}" "${B50[selective_trgm]}" "${B50[common]}" "${B50[common_trgm]}" "${B50[service_idx]}" "${B50[service_trgm]}" \
    "$trgm_cost" "$((tb[1] / 1048576))" "${tb[0]}"
  local took=$((SECONDS - started))
  log "search benchmark done in $took s"
  local key_rows="" key
  local -a b
  for key in selective common service service_idx; do
    case $key in
    selective) label="selective token \`$SEARCH_SELECTIVE\` ($sel_pct % of rows)" ;;
    common) label="common token \`$SEARCH_COMMON\` ($com_pct % of rows)" ;;
    service) label="common token, \`service=$SEARCH_SERVICE\`, \`level=error+\` ($svc_n rows)" ;;
    service_idx) label="the same, + btree (service, ts)" ;;
    esac
    key_rows+="| $label | ${P50[$key]} | ${P99[$key]} | ${P999[$key]} | ${ACH[$key]} | ${ERR[$key]} | ${B50[$key]} | ${B99[$key]} | ${BRUNS[$key]} | $(search_ratio "${B50[$key]}" "${P50[$key]}") / $(search_ratio "${B99[$key]}" "${P99[$key]}") |"$'\n'
  done
  {
    echo
    echo "## search — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    machine
    echo "- \`scripts/bench.sh $BENCH_CMD\` (scripts/bench-search.sh), \`$PROFILE\` build, $took s in all; load average (1, 5, 15 min) when the measurements began: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- $rows rows over $days days ($((table_bytes / 1048576)) MiB of heap), loaded by one INSERT … SELECT in $load_s s: generator events and the Loghub samples through the project's parser (a corpus of $corpus lines), each row a line picked by a seeded hash plus a per-row id; $checked sampled rows re-tokenized by \`log-analyzer parse\` gave exactly the stored tokens"
    echo "- indexes while querying: BRIN on ts and $base_note"
    echo "- $mode_text; $offered requests/s offered for $seconds s per question over at most $SEARCH_CONNECTIONS connections, after a discarded ${warm} s step; latencies in ms"
    echo "- baseline: \`message ILIKE '%tok%' ORDER BY ts DESC LIMIT 100\` (with \`service = … AND level >= 4\` for the third question), one psql session, as many times as the route was asked or for at most $cap s; same table, same indexes. ILIKE matches substrings, so its rows are a superset"
    echo
    echo "| question (newest 100) | p50 | p99 | p99.9 | achieved req/s | errors | ILIKE p50 | ILIKE p99 | ILIKE runs | ratio ILIKE / search (p50 / p99) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s' "$key_rows"
    echo
    echo "Goals: selective p99 ≤ 50 ms **$goal_sel**, common p99 ≤ 200 ms **$goal_com**."
    echo
    echo "Plans (\`EXPLAIN\` of the route's candidate SQL and of the baseline, first nodes):"
    echo
    for key in selective common service service_idx ilike_selective ilike_common ilike_trgm; do
      echo "- $key: ${PLAN[$key]}"
    done
    echo
    echo "Indexes: built on the loaded table (maintenance_work_mem 512MB), and their ingest cost: \`log-analyzer ingest\` of $ingest_events of the dataset's rows (as JSON, produced with kcat to $PARTITIONS partitions) from start to zero lag into an empty \`logs\`, with the BRIN alone and then with each index alone:"
    echo
    echo "| index | built in s | MiB |"
    echo "|---|---:|---:|"
    while IFS=$'\t' read -r def built; do
      [ -n "$def" ] || continue
      read -r -a b <<<"$built"
      echo "| \`$def\` | ${b[0]} | $((b[1] / 1048576)) |"
    done <<<"$index_rows"
    echo "| \`$service_def\` (trial) | ${sb[0]} | $((sb[1] / 1048576)) |"
    echo "| \`$trigram_def\` (trial) | ${tb[0]} | $((tb[1] / 1048576)) |"
    echo
    echo "| ingest with | events/s | seconds | CPU s | vs BRIN only |"
    echo "|---|---:|---:|---:|---:|"
    printf '%s' "$ingest_rows"
    echo
    echo "Does it pay? btree (service, ts): the service question's p99 ${P99[service]} → ${P99[service_idx]} ms (its ILIKE p50 ${B50[service]} → ${B50[service_idx]} ms) for ingest × $svc_cost. pg_trgm GIN on message (serves only ILIKE, not GET /logs): ILIKE p50 selective ${B50[selective]} → ${B50[selective_trgm]} ms, common ${B50[common]} → ${B50[common_trgm]} ms, service ${B50[service_idx]} → ${B50[service_trgm]} ms, for ingest × $trgm_cost."
  } | record
}
