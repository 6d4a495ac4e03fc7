-- Log search (issue #18, DESIGN §13): GET /logs, GET /logs/{topic}/{partition}/{offset} and
-- `log-analyzer search`. Each index is made on the partitioned parent, so every partition (those
-- ensure_logs_partition() makes later too) gets its own. Each one costs every stored row an index
-- insert; scripts/bench-search.sh measures ingest with and without each (see docs/BENCHMARKS.md).
-- Sizes below: 2M generated rows of ~10 tokens (table 439 MB), PostgreSQL 15.

-- Newest first, exactly in the search order (ts, partition, offset, topic; read backwards) with the
-- keyset cursor as an index condition: a page reads the rows after the cursor and stops, instead of
-- sorting the whole range (the BRIN on ts gives no order). Topic in bytewise order ("C"), as the
-- cursor compares it. 95 MB. A newest-100 page of a token in 1 % of rows reads ~11,500 index
-- entries and their rows (~1,500 buffers); of a token in 35 %, ~330 (65 buffers).
CREATE INDEX logs_newest ON logs (ts, "partition", "offset", topic COLLATE "C");

-- Rare tokens: `tokens @> ARRAY[...]` straight to the rows holding them, where the ts order would
-- read past 10M rows to find none. The costliest of the three at ingest (one posting per token,
-- ~10 per row), softened by GIN's pending list (fastupdate, the default). 81 MB. A token in 100
-- of 2M rows: its page in under 1 ms of execution (~150 buffers), where the ts order alone would
-- read all 2M rows.
CREATE INDEX logs_tokens_gin ON logs USING gin (tokens);

-- One event by its Kafka position (GET /logs/{topic}/{partition}/{offset}): without it, a lookup
-- reads every partition in full. Three narrow columns, appended to in order per partition. 78 MB.
CREATE INDEX logs_position ON logs (topic, "partition", "offset");
