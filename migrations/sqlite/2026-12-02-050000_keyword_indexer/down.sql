DROP TABLE log_index;
