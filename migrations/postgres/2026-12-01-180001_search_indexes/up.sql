-- Log search (issue #18, DESIGN §13): GET /logs, GET /logs/{topic}/{partition}/{offset} and
-- `log-analyzer search`. Each index is made on the partitioned parent, so every partition (those
-- ensure_logs_partition() makes later too) gets its own. Each one costs every stored row an index
-- insert; scripts/bench-search.sh measures ingest with and without each (see docs/BENCHMARKS.md).

-- Newest first, exactly in the search order (ts, partition, offset, topic; read backwards) with the
-- keyset cursor as an index condition: a page reads the rows after the cursor and stops, instead of
-- sorting the whole range (the BRIN on ts gives no order). Topic in bytewise order ("C"), as the
-- cursor compares it. Cost: about 40 B per row (measured 2M rows: see the pages below).
CREATE INDEX logs_newest ON logs (ts, "partition", "offset", topic COLLATE "C");

-- Rare tokens: `tokens @> ARRAY[...]` straight to the rows holding them, where the ts order would
-- read past 10M rows to find none. The costliest of the three at ingest (one posting per token,
-- ~10 per row), softened by GIN's pending list (fastupdate, the default).
CREATE INDEX logs_tokens_gin ON logs USING gin (tokens);

-- One event by its Kafka position (GET /logs/{topic}/{partition}/{offset}): without it, a lookup
-- reads every partition in full. Small (three narrow columns) and appended to in order per partition.
CREATE INDEX logs_position ON logs (topic, "partition", "offset");
