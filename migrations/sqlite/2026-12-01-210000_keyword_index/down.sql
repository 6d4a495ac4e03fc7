DROP TABLE log_tokens;
