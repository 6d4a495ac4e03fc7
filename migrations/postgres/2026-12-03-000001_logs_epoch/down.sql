DROP TRIGGER logs_epoch_on_gap ON offset_gaps;
DROP TRIGGER logs_epoch_on_write ON logs;
DROP FUNCTION logs_epoch_bump();
DROP TABLE logs_epoch;
