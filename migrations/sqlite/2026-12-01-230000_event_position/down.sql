DROP INDEX logs_position;
