DROP TABLE ingest_requests;
DROP TABLE job_runs;
DROP TABLE keyword_daily;
DROP TABLE user_log_summary;
DROP TABLE offset_gaps;
DROP TABLE log_rejects;
DROP TABLE kafka_offsets;
DROP TABLE logs;
