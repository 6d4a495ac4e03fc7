-- POST /ingest with an Idempotency-Key header (issue #12): the first request with a key claims its row
-- before producing anything (a concurrent duplicate finds the row and produces nothing), and leaves its
-- answer here so that a retry within 24 h gets the same status and body. `status` is NULL while the
-- first request is still running. Rows older than 24 h are expired: reclaimed or deleted.
CREATE TABLE ingest_requests (
    key          text        PRIMARY KEY,
    -- SHA-256 of the body: the same key with another body is refused.
    request_hash bytea       NOT NULL,
    status       smallint,
    response     bytea,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX ingest_requests_created_at ON ingest_requests (created_at);
