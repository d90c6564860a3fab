-- requires-version: 1
--
-- llmpulse_refresh_traces(trace_ids): recompute the traces summary rows of
-- the given traces from their spans. Writers call it after upserting a batch
-- of spans:
--
--   SELECT llmpulse_refresh_traces(ARRAY['t1', 't2'])
--
-- Recomputing (instead of adding a batch's counts to the summary) is what
-- makes it replay-safe: a batch delivered twice after a rebalance leaves the
-- same summary as one delivered once. Returns the number of traces written.
--
-- root_span_id/root_name stay NULL until the span without a parent arrives;
-- project comes from the root span when present, else from the earliest span.
CREATE OR REPLACE FUNCTION llmpulse_refresh_traces(p_trace_ids text[])
RETURNS bigint
LANGUAGE sql
VOLATILE
BEGIN ATOMIC
    WITH summary AS (
        SELECT
            s.trace_id,
            (array_agg(s.project ORDER BY (s.parent_span_id IS NOT NULL), s.start_time, s.span_id))[1]
                AS project,
            (array_agg(s.span_id ORDER BY s.start_time, s.span_id)
                FILTER (WHERE s.parent_span_id IS NULL))[1] AS root_span_id,
            (array_agg(s.name ORDER BY s.start_time, s.span_id)
                FILTER (WHERE s.parent_span_id IS NULL))[1] AS root_name,
            min(s.start_time) AS start_time,
            max(s.end_time) AS end_time,
            CASE
                WHEN bool_or(s.status = 'error') THEN 'error'
                WHEN bool_or(s.status = 'ok') THEN 'ok'
                ELSE 'unset'
            END AS status,
            count(*) AS span_count,
            count(*) FILTER (WHERE s.status = 'error') AS error_count,
            coalesce(sum(s.input_tokens), 0) AS input_tokens,
            coalesce(sum(s.output_tokens), 0) AS output_tokens,
            coalesce(sum(s.cost_usd), 0) AS cost_usd,
            (array_agg(s.user_id ORDER BY s.start_time, s.span_id)
                FILTER (WHERE s.user_id IS NOT NULL))[1] AS user_id,
            (array_agg(s.session_id ORDER BY s.start_time, s.span_id)
                FILTER (WHERE s.session_id IS NOT NULL))[1] AS session_id
        FROM spans AS s
        WHERE s.trace_id = ANY (p_trace_ids)
        GROUP BY s.trace_id
    ),
    written AS (
        INSERT INTO traces AS t (
            trace_id, project, root_span_id, root_name, start_time, end_time,
            status, span_count, error_count, input_tokens, output_tokens,
            cost_usd, user_id, session_id, updated_at
        )
        SELECT
            trace_id, project, root_span_id, root_name, start_time, end_time,
            status, span_count, error_count, input_tokens, output_tokens,
            cost_usd, user_id, session_id, now()
        FROM summary
        ON CONFLICT (trace_id) DO UPDATE SET
            project       = EXCLUDED.project,
            root_span_id  = EXCLUDED.root_span_id,
            root_name     = EXCLUDED.root_name,
            start_time    = EXCLUDED.start_time,
            end_time      = EXCLUDED.end_time,
            status        = EXCLUDED.status,
            span_count    = EXCLUDED.span_count,
            error_count   = EXCLUDED.error_count,
            input_tokens  = EXCLUDED.input_tokens,
            output_tokens = EXCLUDED.output_tokens,
            cost_usd      = EXCLUDED.cost_usd,
            user_id       = EXCLUDED.user_id,
            session_id    = EXCLUDED.session_id,
            updated_at    = EXCLUDED.updated_at
        RETURNING 1
    )
    SELECT count(*) FROM written;
END;

COMMENT ON FUNCTION llmpulse_refresh_traces(text[]) IS
    'Recompute traces summary rows from spans (replay-safe).';
