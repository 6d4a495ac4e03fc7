-- The daily summary (issue #5): per-user figures and the day's top keywords, written by the summary job
-- (`log-analyzer summary --date D`, or the SchedulerActor) as one replace per day, and the record of
-- every job run. Events without a user_id are summarized under user_id '(none)'.
CREATE TABLE user_log_summary (
    day          date        NOT NULL,
    user_id      text        NOT NULL,
    total        bigint      NOT NULL,
    errors       bigint      NOT NULL,
    warnings     bigint      NOT NULL,
    error_rate   float8      NOT NULL,
    -- Distinct services the user's events came from, sorted.
    services     text[]      NOT NULL,
    first_seen   timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL,
    -- [{"keyword": k, "count": n}], the 10 most frequent non-stop-word tokens, by count then keyword.
    top_keywords jsonb       NOT NULL,
    PRIMARY KEY (day, user_id)
);

-- The 1,000 most frequent non-stop-word tokens of each day (count = events with the token).
CREATE TABLE keyword_daily (
    day     date   NOT NULL,
    keyword text   NOT NULL,
    count   bigint NOT NULL,
    PRIMARY KEY (day, keyword)
);

-- One row per job run: 'running' when it starts (a crash leaves it so), then 'ok' (in the same
-- transaction as the data it wrote) or 'failed'.
CREATE TABLE job_runs (
    id           bigserial   PRIMARY KEY,
    job          text        NOT NULL,
    day          date        NOT NULL,
    started      timestamptz NOT NULL DEFAULT now(),
    finished     timestamptz,
    status       text        NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'ok', 'failed')),
    rows         bigint,
    -- The day's dead letters (log_rejects by rejected_at) by reason: {"not_json": 3, ...}.
    invalid_rows jsonb       NOT NULL DEFAULT '{}'::jsonb,
    duration_ms  bigint,
    error        text
);

CREATE INDEX job_runs_job_day ON job_runs (job, day) WHERE status = 'ok';
