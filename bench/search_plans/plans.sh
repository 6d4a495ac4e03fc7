#!/bin/bash
# EXPLAIN (ANALYZE, BUFFERS) of the statements src/db/search.rs sends, one case per call:
#   bench/search_plans/plans.sh selective|common|none1|none2|rare2|common2|service|service3|errors|deep|deeprare|nofilter|event|ilike
# on a database made by generate.sql (see its header).
DB=${SEARCH_PLANS_DB:?set SEARCH_PLANS_DB to a database made by generate.sql}
ORDER='ts DESC, "partition" DESC, "offset" DESC, topic COLLATE "C" DESC'
scan() { # $1 range, $2 matched, $3 bound, $4 want+1
cat <<SQL
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) SELECT ts, "partition", "offset", topic, matched, n FROM (
  SELECT ts, "partition", "offset", topic, ($2) AS matched, row_number() OVER () AS n
  FROM (SELECT ts, "partition", "offset", topic, level, service, tokens FROM logs
        WHERE $1 ORDER BY $ORDER LIMIT $3) walked) numbered WHERE matched OR n = $3 LIMIT $4;
SQL
}
probe() { # $1 include, $2 range, $3 rest, $4 probe+1, $5 want
cat <<SQL
BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) WITH holding AS MATERIALIZED (
  SELECT ts, "partition", "offset", topic, level, service, tokens FROM logs WHERE tokens @> $1 AND $2 LIMIT $4)
SELECT c.hits, m.ts, m."partition", m."offset", m.topic FROM (SELECT count(*)::bigint AS hits FROM holding) c
LEFT JOIN LATERAL (SELECT ts, "partition", "offset", topic FROM holding WHERE $3 ORDER BY $ORDER LIMIT $5) m ON true;
COMMIT;
SQL
}
timed() { echo "== $1"; shift; psql -X -q $DB -c '\timing on' -f <(echo "$@") | grep -E "Execution Time|Planning Time|Time:|Rows Removed by Filter|^ *(Limit|Nested)|Heap Blocks" | sed "s/^ *//" | head -${LINES_MAX:-14}; }
case "$1" in
  selective) timed "selective token timeout (1%): step 1" "$(scan true "tokens @> '{timeout}'" 20000 101)";;
  common) timed "common token request (35%): step 1" "$(scan true "tokens @> '{request}'" 20000 101)";;
  none1) timed "token in no row: step 1 (20000 rows)" "$(scan true "tokens @> '{nosuchtoken}'" 20000 101)";;
  none2) timed "token in no row: step 2 probe" "$(probe "'{nosuchtoken}'" "(ts, \"partition\", \"offset\", topic COLLATE \"C\") < ('2026-11-30 23:00:00+00', 0, 1, 'logs')" true 20001 101)";;
  rare2) timed "rare token deadlock: step 2 probe" "$(probe "'{deadlock}'" "(ts, \"partition\", \"offset\", topic COLLATE \"C\") < ('2026-11-30 23:00:00+00', 0, 1, 'logs')" true 20001 101)";;
  common2) timed "common token request: step 2 probe (worst case)" "$(probe "'{request}'" true true 20001 101)";;
  service) timed "service billing (0.1%), no token: whole budget" "$(scan true "service = 'billing'" 100000 101)";;
  service3) timed "service svc3 (8%)" "$(scan true "service = 'svc3'" 100000 101)";;
  errors) timed "level error+ (5%)" "$(scan true "level = ANY('{4,5}'::smallint[])" 100000 101)";;
  deep) timed "selective token, cursor deep (2026-11-27 06:00)" "$(scan "(ts, \"partition\", \"offset\", topic COLLATE \"C\") < ('2026-11-27 06:00:00+00', 3, 100, 'logs')" "tokens @> '{timeout}'" 20000 101)";;
  deeprare) timed "rare token, cursor deep: probe" "$(probe "'{deadlock}'" "(ts, \"partition\", \"offset\", topic COLLATE \"C\") < ('2026-11-27 06:00:00+00', 3, 100, 'logs')" true 20001 101)";;
  nofilter) timed "no filter" "$(scan true true 100000 101)";;
  event) echo "== event lookup"; psql -X -q $DB -c "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) SELECT * FROM logs WHERE topic='logs' AND \"partition\"=3 AND \"offset\"=123456 LIMIT 1" | grep -E "Execution|Index|Buffers" | head -5;;
  ilike) echo "== baseline ILIKE"; psql -X -q $DB -c "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) SELECT ts FROM logs WHERE message ILIKE '%timeout%' ORDER BY ts DESC LIMIT 100" | grep -E "Execution|Buffers" | head -3;;
esac
