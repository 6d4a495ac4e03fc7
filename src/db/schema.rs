//! diesel's view of the tables created by `migrations/postgres/` (written by hand; keep in step with up.sql).

diesel::table! {
    /// Partitioned by day on `ts`; no primary key in SQL, the Kafka position identifies a row.
    logs (topic, partition, offset) {
        ts -> Timestamptz,
        level -> SmallInt,
        service -> Text,
        user_id -> Nullable<Text>,
        message -> Text,
        tokens -> Array<Text>,
        attrs -> Jsonb,
        topic -> Text,
        partition -> Integer,
        offset -> BigInt,
        ingested_at -> Timestamptz,
    }
}

diesel::table! {
    kafka_offsets (topic, partition) {
        topic -> Text,
        partition -> Integer,
        next_offset -> BigInt,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    log_rejects (id) {
        id -> BigInt,
        source -> Text,
        topic -> Nullable<Text>,
        partition -> Nullable<Integer>,
        offset -> Nullable<BigInt>,
        reason -> Text,
        detail -> Text,
        raw -> Bytea,
        raw_len -> Integer,
        kafka_ts -> Nullable<Timestamptz>,
        rejected_at -> Timestamptz,
        replayed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    /// One row per user and day; events without a user_id under `(none)`.
    user_log_summary (day, user_id) {
        day -> Date,
        user_id -> Text,
        total -> BigInt,
        errors -> BigInt,
        warnings -> BigInt,
        error_rate -> Double,
        services -> Array<Text>,
        first_seen -> Timestamptz,
        last_seen -> Timestamptz,
        top_keywords -> Jsonb,
    }
}

diesel::table! {
    keyword_daily (day, keyword) {
        day -> Date,
        keyword -> Text,
        count -> BigInt,
    }
}

diesel::table! {
    job_runs (id) {
        id -> BigInt,
        job -> Text,
        day -> Date,
        started -> Timestamptz,
        finished -> Nullable<Timestamptz>,
        status -> Text,
        rows -> Nullable<BigInt>,
        invalid_rows -> Jsonb,
        duration_ms -> Nullable<BigInt>,
        error -> Nullable<Text>,
    }
}
diesel::table! {
    /// POST /ingest answers by Idempotency-Key; `status` is NULL while the first request runs.
    ingest_requests (key) {
        key -> Text,
        request_hash -> Bytea,
        status -> Nullable<SmallInt>,
        response -> Nullable<Bytea>,
        created_at -> Timestamptz,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    logs,
    kafka_offsets,
    log_rejects,
    user_log_summary,
    keyword_daily,
    job_runs,
    ingest_requests
);

diesel::table! {
    offset_gaps (id) {
        id -> BigInt,
        topic -> Text,
        partition -> Integer,
        from_offset -> BigInt,
        to_offset -> BigInt,
        detected_at -> Timestamptz,
    }
}
