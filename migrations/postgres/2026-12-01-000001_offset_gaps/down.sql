DROP TABLE offset_gaps;
