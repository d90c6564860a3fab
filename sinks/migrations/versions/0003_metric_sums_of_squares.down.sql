-- 0003_metric_sums_of_squares (down): drop the sums of squares.
ALTER TABLE metric_windows
    DROP COLUMN cost_sq_sum, DROP COLUMN rating_sq_sum, DROP COLUMN latency_ms_sum, DROP COLUMN latency_ms_sq_sum;
ALTER TABLE metric_window_parts
    DROP COLUMN cost_sq_sum, DROP COLUMN rating_sq_sum, DROP COLUMN latency_ms_sum, DROP COLUMN latency_ms_sq_sum;
