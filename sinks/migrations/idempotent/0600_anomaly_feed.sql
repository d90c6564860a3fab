-- requires-version: 6
--
-- Functions behind the anomaly feed dashboard (deploy/grafana/dashboards/anomalies.json).
--
-- llmpulse_metric_text(metric, value): a value the way people read it, in
--   the same formats as alerts and `llmpulse anomalies` (sinks/anomaly_store.py
--   format_value): rates in %, latencies in ms, costs in $.
--
-- llmpulse_anomaly_metric(metric, dimensions, from, to): the metric of an
--   anomaly's series per window, rebuilt from the fine metric_windows rows
--   inside its scope (every dimension in `dimensions` must match), at 1m up
--   to 6 hours, 1h up to 7 days, else 1d. Ratios are sums first, then the
--   ratio. Latency quantiles cannot be merged from stored quantiles: they
--   are approximated by the request-weighted mean of the fine series'
--   quantiles (exact when the scope is one fine series; the root cause uses
--   the sketches instead, see docs/anomalies.md).

CREATE OR REPLACE FUNCTION llmpulse_metric_text(metric text, value double precision)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN value IS NULL OR value = 'NaN'::float8 OR value IN ('Infinity'::float8, '-Infinity'::float8) THEN 'n/a'
        WHEN metric LIKE '%\_rate' THEN to_char(value * 100, 'FM999999990.0') || '%'
        WHEN metric LIKE '%\_ms' THEN to_char(round(value), 'FM999999999990') || ' ms'
        WHEN metric = 'cost_per_request' THEN '$' || to_char(value, 'FM999999990.0000')
        WHEN metric LIKE 'cost%' THEN '$' || to_char(value, 'FM999,999,999,990.00')
        WHEN metric LIKE '%\_count' OR metric LIKE '%\_tokens' OR metric LIKE '%\_events'
            THEN to_char(round(value), 'FM999,999,999,999,990')
        ELSE to_char(value, 'FM999999999990.00')
    END
$$;

CREATE OR REPLACE FUNCTION llmpulse_anomaly_metric(
    metric text, dimensions jsonb, range_from timestamptz, range_to timestamptz)
RETURNS TABLE (window_start timestamptz, value double precision, events bigint)
LANGUAGE sql STABLE AS $$
    SELECT
        w.window_start,
        CASE
            WHEN metric = 'error_rate' THEN sum(w.error_count)::float8 / nullif(sum(w.request_count), 0)
            WHEN metric = 'request_count' THEN sum(w.request_count)::float8
            WHEN metric = 'cost_usd' THEN sum(w.cost_usd)::float8
            WHEN metric = 'cost_per_request' THEN sum(w.cost_usd)::float8 / nullif(sum(w.cost_count), 0)
            WHEN metric = 'input_tokens' THEN sum(w.input_tokens)::float8
            WHEN metric = 'output_tokens' THEN sum(w.output_tokens)::float8
            WHEN metric = 'cached_tokens' THEN sum(w.cached_tokens)::float8
            WHEN metric = 'feedback_count' THEN sum(w.feedback_count)::float8
            WHEN metric = 'rating_mean' THEN sum(w.rating_sum) / nullif(sum(w.rating_count), 0)
            WHEN metric = 'thumbs_up_rate' THEN sum(w.thumbs_up)::float8 / nullif(sum(w.thumbs_count), 0)
            WHEN metric = 'late_events' THEN sum(w.late_events)::float8
            WHEN metric IN ('latency_p50_ms', 'p50_ms')
                THEN sum(w.p50_ms * w.request_count) / nullif(sum(w.request_count) FILTER (WHERE w.p50_ms IS NOT NULL), 0)
            WHEN metric IN ('latency_p90_ms', 'p90_ms')
                THEN sum(w.p90_ms * w.request_count) / nullif(sum(w.request_count) FILTER (WHERE w.p90_ms IS NOT NULL), 0)
            WHEN metric IN ('latency_p95_ms', 'p95_ms')
                THEN sum(w.p95_ms * w.request_count) / nullif(sum(w.request_count) FILTER (WHERE w.p95_ms IS NOT NULL), 0)
            WHEN metric IN ('latency_p99_ms', 'p99_ms')
                THEN sum(w.p99_ms * w.request_count) / nullif(sum(w.request_count) FILTER (WHERE w.p99_ms IS NOT NULL), 0)
        END,
        sum(w.request_count)::bigint
    FROM metric_windows AS w
    WHERE w.resolution = CASE
            WHEN range_to - range_from <= interval '6 hours' THEN '1m'
            WHEN range_to - range_from <= interval '7 days' THEN '1h'
            ELSE '1d'
        END
      AND w.window_start >= range_from AND w.window_start < range_to
      AND (dimensions ->> 'project' IS NULL OR w.project = dimensions ->> 'project')
      AND (dimensions ->> 'model' IS NULL OR w.model = dimensions ->> 'model')
      AND (dimensions ->> 'provider' IS NULL OR w.provider = dimensions ->> 'provider')
      AND (dimensions ->> 'prompt_version' IS NULL OR w.prompt_version = dimensions ->> 'prompt_version')
      AND (dimensions ->> 'kind' IS NULL OR w.kind = dimensions ->> 'kind')
      AND (dimensions ->> 'cohort' IS NULL OR w.cohort = dimensions ->> 'cohort')
      AND (dimensions ->> 'variant' IS NULL OR w.variant = dimensions ->> 'variant')
    GROUP BY w.window_start
    ORDER BY 1
$$;
