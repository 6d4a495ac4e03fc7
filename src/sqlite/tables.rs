//! diesel's view of the embedded store's tables that the write path touches (the SQLite schema is in
//! migrations/sqlite; its types differ from PostgreSQL's, so `crate::db::schema` does not fit).

diesel::table! {
    logs (rowid) {
        rowid -> BigInt,
        ts -> BigInt,
        level -> Integer,
        service -> Text,
        user_id -> Nullable<Text>,
        message -> Text,
        tokens -> Text,
        attrs -> Text,
        topic -> Text,
        #[sql_name = "partition"]
        partition -> Integer,
        #[sql_name = "offset"]
        offset -> BigInt,
        ingested_at -> BigInt,
    }
}

diesel::table! {
    log_rejects (id) {
        id -> BigInt,
        source -> Text,
        topic -> Nullable<Text>,
        #[sql_name = "partition"]
        partition -> Nullable<Integer>,
        #[sql_name = "offset"]
        offset -> Nullable<BigInt>,
        reason -> Text,
        detail -> Text,
        raw -> Binary,
        raw_len -> BigInt,
        kafka_ts -> Nullable<BigInt>,
        rejected_at -> BigInt,
        replayed_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    kafka_offsets (topic, partition) {
        topic -> Text,
        #[sql_name = "partition"]
        partition -> Integer,
        next_offset -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    offset_gaps (id) {
        id -> BigInt,
        topic -> Text,
        #[sql_name = "partition"]
        partition -> Integer,
        from_offset -> BigInt,
        to_offset -> BigInt,
        detected_at -> BigInt,
    }
}

diesel::table! {
    ingest_requests (key) {
        key -> Text,
        request_hash -> Binary,
        status -> Nullable<Integer>,
        response -> Nullable<Binary>,
        created_at -> BigInt,
    }
}
