-- One event by its queue position (`GET /logs/{topic}/{partition}/{offset}`): without it the lookup
-- reads every row. A batch is one partition's consecutive offsets, so its entries append at one
-- place of this key (a page or two per commit), and two integers keep the entries small; the topic
-- is checked on the row (a position is one row per topic). Measured: docs/BENCHMARKS.md, "SQLite search".
CREATE INDEX logs_position ON logs ("partition", "offset");
