-- 0003_metric_sums_of_squares (down): drop the sums of squares.
-- The cohort comparison functions (idempotent/0300, requires version 3)
-- depend on no table, so no CASCADE removes them: drop them here.
DROP FUNCTION IF EXISTS llmpulse_cohort_compare(text, interval, text, text, double precision, text, timestamptz, text[], text[]),
  llmpulse_cohort_sums(text, interval, text, text, timestamptz, text[], text[]), llmpulse_cohort_metric_check(text),
  llmpulse_fisher_exact_p(bigint, bigint, bigint, bigint), llmpulse_t_isf(float8, float8), llmpulse_t_pdf(float8, float8),
  llmpulse_t_cdf(float8, float8), llmpulse_t_sf(float8, float8), llmpulse_norm_isf(float8), llmpulse_norm_cdf(float8),
  llmpulse_norm_sf(float8), llmpulse_gammaincc(float8, float8), llmpulse_betainc(float8, float8, float8, float8, float8, float8),
  llmpulse_betacf(float8, float8, float8, float8), llmpulse_lbeta(float8, float8), llmpulse_lgamma(float8),
  llmpulse_stirling_tail(float8), llmpulse_log1p(float8), llmpulse_exp0(float8);
ALTER TABLE metric_windows
    DROP COLUMN cost_sq_sum, DROP COLUMN rating_sq_sum, DROP COLUMN latency_ms_sum, DROP COLUMN latency_ms_sq_sum;
ALTER TABLE metric_window_parts
    DROP COLUMN cost_sq_sum, DROP COLUMN rating_sq_sum, DROP COLUMN latency_ms_sum, DROP COLUMN latency_ms_sq_sum;
