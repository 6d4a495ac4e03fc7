DROP TABLE log_token_seconds;
