-- A database to read log search plans on (src/db/search.rs, bench/search_plans/plans.sh):
--   createdb la_search_plans
--   for d in migrations/postgres/*/; do psql -q "$URL" -f "$d/up.sql"; done   # creates the search indexes too
--   psql "$URL" -c "SELECT ensure_logs_partition(d::date) FROM generate_series('2026-11-26'::date, '2026-12-01'::date, '1 day') d"
--   psql "$URL" -f bench/search_plans/generate.sql && psql "$URL" -c 'ANALYZE logs'
-- Loading before creating the indexes is faster (apply the search_indexes migration last).
-- 2M rows over 4 days, roughly in time order like ingest; known token frequencies:
-- request ~35 %, timeout ~1 %, deadlock ~0.005 %, nosuchtoken 0 %; services svc0..svc11 and billing (0.1 %).
INSERT INTO logs (ts, level, service, user_id, message, tokens, topic, "partition", "offset")
SELECT ts, level, service, 'u' || (i % 1000), array_to_string(tokens, ' '), tokens, 'logs', (i % 6)::int, (i / 6)::bigint
FROM (
  SELECT i,
    timestamptz '2026-11-27 00:00:00+00' + (i * 0.1728) * interval '1 second' - random() * interval '2 seconds' AS ts,
    CASE WHEN r1 < 0.03 THEN 4 WHEN r1 < 0.05 THEN 5 WHEN r1 < 0.15 THEN 3 WHEN r1 < 0.75 THEN 2 WHEN r1 < 0.95 THEN 1 ELSE 0 END::smallint AS level,
    CASE WHEN r2 < 0.001 THEN 'billing' ELSE 'svc' || floor(r2 * 12)::int END AS service,
    (CASE WHEN r3 < 0.35 THEN ARRAY['request'] ELSE '{}' END)
    || (CASE WHEN r4 < 0.01 THEN ARRAY['timeout'] ELSE '{}' END)
    || (CASE WHEN r5 < 0.00005 THEN ARRAY['deadlock'] ELSE '{}' END)
    || ARRAY['w' || floor(power(random(), 3) * 5000)::int, 'w' || floor(power(random(), 3) * 5000)::int,
             'w' || floor(power(random(), 3) * 5000)::int, 'x' || floor(random() * 100000)::int,
             'x' || floor(random() * 100000)::int, 'done', 'in', 'ms'] AS tokens
  FROM (SELECT i, random() r1, random() r2, random() r3, random() r4, random() r5 FROM generate_series(0, 1999999) i) g
) s;
