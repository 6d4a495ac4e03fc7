DROP INDEX logs_position;
DROP INDEX logs_tokens_gin;
DROP INDEX logs_newest;
