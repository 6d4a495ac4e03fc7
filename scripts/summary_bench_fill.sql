-- Fills the logs partition of 2026-11-20 with 10M realistic rows for the summary benchmark
-- (docs/BENCHMARKS.md): 300-word vocabulary with stop words, 3..10 words and a request id per
-- message (~7.5 tokens, ~1M distinct ids), 1000 Zipf-like users plus 10% without user_id, 12 services.
-- Run on a scratch database that has the migrations applied.
\timing on
SELECT ensure_logs_partition('2026-11-20');
-- 300-word vocabulary: stop words, log words, and numbered terms; all lowercase [a-z0-9_], 2..64 chars.
CREATE TEMP TABLE vocab AS
SELECT array_agg(w ORDER BY n) AS words FROM (
  SELECT w, row_number() OVER () AS n FROM unnest(
    ARRAY['the','to','of','and','in','for','on','with','is','was','timeout','refused','denied','exception',
          'panic','failed','unavailable','deadline','connection','request','response','user','order','payment',
          'cache','miss','hit','db','query','slow','retry','upstream','downstream','service','latency','ms',
          'checkout','login','logout','session','token','expired','invalid','ok','started','finished','queue',
          'worker','job','scheduled','http','status','200','404','500','503','get','post','put','delete']
    || ARRAY(SELECT 'term' || i FROM generate_series(1, 240) i)) AS w
) v;
INSERT INTO logs (ts, level, service, user_id, message, tokens, topic, "partition", "offset")
SELECT ts, level, service, user_id, array_to_string(words, ' ') || ' req' || rid, words || ('req' || rid), 'bench', 0, g
FROM (
  SELECT g,
         '2026-11-20 00:00:00+00'::timestamptz + (g::float8 / 10000000) * interval '1 day' AS ts,
         (CASE WHEN r < 0.05 THEN 0 WHEN r < 0.20 THEN 1 WHEN r < 0.80 THEN 2 WHEN r < 0.92 THEN 3 WHEN r < 0.98 THEN 4 ELSE 5 END)::smallint AS level,
         'service-' || (g % 12) AS service,
         CASE WHEN random() < 0.1 THEN NULL ELSE 'user-' || floor(1000 * random() ^ 3)::int END AS user_id,
         (SELECT words FROM vocab)[a:a + n - 1] AS words,
         floor(random() * 1000000)::int AS rid
  FROM (SELECT g, random() AS r, 1 + floor(random() * 290)::int AS a, 3 + floor(random() * 8)::int AS n
        FROM generate_series(0, 9999999) g) s
) x;
ANALYZE logs_20261120;
SELECT count(*), pg_size_pretty(pg_total_relation_size('logs_20261120')) FROM logs_20261120;
