DROP TABLE job_runs;
DROP TABLE keyword_daily;
DROP TABLE user_log_summary;
