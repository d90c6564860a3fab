-- 0003_metric_sums_of_squares: sums and sums of squares per window.
--
-- Never edit this file once it has landed: add a new numbered migration.
--
-- With n, sum and sum of squares a window's mean has a variance, so cohorts
-- and experiment variants can be compared with Welch's t-test straight from
-- metric_windows (llmpulse_cohort_compare, experiment results). All four are
-- plain sums: partials merge and minutes roll up into hours and days by
-- addition, exactly like the counters. Windows written before this migration
-- read 0, which the comparisons treat as "no variance information" (n > 0
-- with a zero sum of squares is only possible for constant values).

ALTER TABLE metric_window_parts
    ADD COLUMN cost_sq_sum       double precision NOT NULL DEFAULT 0,
    ADD COLUMN rating_sq_sum     double precision NOT NULL DEFAULT 0,
    ADD COLUMN latency_ms_sum    double precision NOT NULL DEFAULT 0,
    ADD COLUMN latency_ms_sq_sum double precision NOT NULL DEFAULT 0;

ALTER TABLE metric_windows
    ADD COLUMN cost_sq_sum       double precision NOT NULL DEFAULT 0,
    ADD COLUMN rating_sq_sum     double precision NOT NULL DEFAULT 0,
    ADD COLUMN latency_ms_sum    double precision NOT NULL DEFAULT 0,
    ADD COLUMN latency_ms_sq_sum double precision NOT NULL DEFAULT 0;

COMMENT ON COLUMN metric_windows.cost_sq_sum IS 'Sum of cost_usd^2 over spans with a cost.';
COMMENT ON COLUMN metric_windows.rating_sq_sum IS 'Sum of rating^2 over ratings.';
COMMENT ON COLUMN metric_windows.latency_ms_sum IS 'Sum of span latencies (ms).';
COMMENT ON COLUMN metric_windows.latency_ms_sq_sum IS 'Sum of squared span latencies (ms^2).';
