DROP TABLE log_rejects;
DROP TABLE kafka_offsets;
DROP TABLE logs;
DROP FUNCTION ensure_logs_partition(date);
