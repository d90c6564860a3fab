-- requires-version: 2
--
-- metric_windows_rates: metric_windows plus the ratios dashboards plot.
-- Every ratio is computed from the row's own sums (never averaged across
-- rows) and is NULL when its denominator is zero, so an empty window shows
-- as a gap rather than as 0 %. To chart a ratio over several rows, sum the
-- numerators and denominators first:
--
--   SELECT window_start, sum(error_count)::float8 / nullif(sum(request_count), 0)
--   FROM metric_windows WHERE resolution = '1h' AND project = $1 GROUP BY 1
--
-- Columns are listed, not SELECT *: CREATE OR REPLACE VIEW may only append
-- columns, and a * would shift them when metric_windows gains one.
CREATE OR REPLACE VIEW metric_windows_rates AS
SELECT
    w.resolution,
    w.window_start,
    w.window_seconds,
    w.series,
    w.project,
    w.model,
    w.provider,
    w.prompt_version,
    w.kind,
    w.cohort,
    w.variant,
    w.request_count,
    w.error_count,
    w.input_tokens,
    w.output_tokens,
    w.cached_tokens,
    w.usage_count,
    w.cost_usd,
    w.cost_count,
    w.feedback_count,
    w.rating_sum,
    w.rating_count,
    w.thumbs_up,
    w.thumbs_count,
    w.late_events,
    w.p50_ms,
    w.p90_ms,
    w.p95_ms,
    w.p99_ms,
    w.partitions,
    w.final,
    w.updated_at,
    w.error_count::double precision / nullif(w.request_count, 0) AS error_rate,
    -- Over the spans whose cost is known, as WindowSnapshot.cost_per_request.
    w.cost_usd::double precision / nullif(w.cost_count, 0) AS cost_per_request,
    w.rating_sum / nullif(w.rating_count, 0) AS rating_mean,
    w.thumbs_up::double precision / nullif(w.thumbs_count, 0) AS thumbs_up_rate
FROM metric_windows AS w;

COMMENT ON VIEW metric_windows_rates IS
    'metric_windows with error_rate, cost_per_request, rating_mean and thumbs_up_rate '
    '(NULL when the denominator is 0).';
