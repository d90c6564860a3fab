-- requires-version: 1
--
-- llmpulse_trace_spans(trace_id): one trace in the data-frame shape that
-- Grafana's Traces panel reads (traceID, spanID, parentSpanID, serviceName,
-- operationName, startTime and duration in milliseconds, tags as an array of
-- {key, value}; statusCode/statusMessage make the panel flag failed spans).
--
--   SELECT * FROM llmpulse_trace_spans('$trace_id')
--
-- Re-applied on every migrate. BEGIN ATOMIC (not a quoted body) makes
-- PostgreSQL record the dependency on spans, so rolling back the migration
-- that created spans drops this function with it instead of leaving a
-- function that fails at call time. Changing the result columns needs a
-- DROP FUNCTION first: CREATE OR REPLACE cannot change a return type.
CREATE OR REPLACE FUNCTION llmpulse_trace_spans(p_trace_id text)
RETURNS TABLE (
    "traceID"       text,
    "spanID"        text,
    "parentSpanID"  text,
    "serviceName"   text,
    "operationName" text,
    "startTime"     double precision,
    "duration"      double precision,
    "tags"          jsonb,
    "statusCode"    integer,
    "statusMessage" text
)
LANGUAGE sql
STABLE
PARALLEL SAFE
BEGIN ATOMIC
    SELECT
        s.trace_id,
        s.span_id,
        s.parent_span_id,
        s.project,
        s.name,
        (EXTRACT(EPOCH FROM s.start_time) * 1000)::double precision,
        s.duration_ms,
        coalesce(
            (SELECT jsonb_agg(jsonb_build_object('key', t.key, 'value', t.value) ORDER BY t.ord)
               FROM (VALUES
                        (1, 'kind',           to_jsonb(s.kind)),
                        (2, 'status',         to_jsonb(s.status)),
                        (3, 'model',          to_jsonb(coalesce(s.response_model, s.request_model))),
                        (4, 'provider',       to_jsonb(s.provider)),
                        (5, 'operation',      to_jsonb(s.operation)),
                        (6, 'tokens',         to_jsonb(CASE
                                                  WHEN s.input_tokens IS NULL AND s.output_tokens IS NULL THEN NULL
                                                  ELSE coalesce(s.input_tokens, 0) + coalesce(s.output_tokens, 0)
                                              END)),
                        (7, 'input_tokens',   to_jsonb(s.input_tokens)),
                        (8, 'output_tokens',  to_jsonb(s.output_tokens)),
                        (9, 'cost_usd',       to_jsonb(s.cost_usd)),
                        (10, 'prompt_version', to_jsonb(s.prompt_version))
                    ) AS t (ord, key, value)
              WHERE t.value IS NOT NULL),
            '[]'::jsonb
        ),
        CASE s.status WHEN 'ok' THEN 1 WHEN 'error' THEN 2 ELSE 0 END,
        s.status_message
    FROM spans AS s
    WHERE s.trace_id = p_trace_id
    ORDER BY s.start_time, s.span_id;
END;

COMMENT ON FUNCTION llmpulse_trace_spans(text) IS
    'Spans of one trace in the shape of Grafana''s Traces panel.';
