-- Offsets ingest had to jump over because Kafka no longer has them: retention deleted them before
-- they were stored (from_offset < to_offset: those messages are lost to ingest), or the topic was
-- recreated and its offsets started again (to_offset < from_offset). Written in the same transaction
-- that moves kafka_offsets.next_offset from from_offset to to_offset; listed by `log-analyzer gaps list`.
CREATE TABLE offset_gaps (
    id          bigserial   PRIMARY KEY,
    topic       text        NOT NULL,
    "partition" integer     NOT NULL,
    from_offset bigint      NOT NULL,
    to_offset   bigint      NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX offset_gaps_detected_at ON offset_gaps (detected_at);
