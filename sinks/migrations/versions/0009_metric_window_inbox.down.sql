-- 0009_metric_window_inbox (down).
DROP TABLE IF EXISTS metric_window_inbox;
