-- 0001_spans_traces: raw spans and one summary row per trace.
--
-- Never edit this file once it has landed: the migrator stores its checksum
-- and refuses to run against a database where it changed. Add a new
-- numbered migration instead.

CREATE TABLE spans (
    trace_id                    text        NOT NULL,
    span_id                     text        NOT NULL,
    parent_span_id              text,
    name                        text        NOT NULL,
    kind                        text        NOT NULL DEFAULT 'other',
    start_time                  timestamptz NOT NULL,
    end_time                    timestamptz NOT NULL,
    -- Stored, not computed in every query: dashboards filter and aggregate on it.
    duration_ms                 double precision
                                GENERATED ALWAYS AS (
                                    (EXTRACT(EPOCH FROM (end_time - start_time)) * 1000)::double precision
                                ) STORED,
    status                      text        NOT NULL DEFAULT 'unset',
    status_message              text,
    error_type                  text,
    project                     text        NOT NULL,
    service_name                text,
    environment                 text,
    user_id                     text,
    session_id                  text,
    prompt_version              text,
    operation                   text,
    provider                    text,
    request_model               text,
    response_model              text,
    response_id                 text,
    finish_reasons              text[],
    temperature                 double precision,
    max_tokens                  bigint,
    tool_name                   text,
    agent_name                  text,
    first_token_time            timestamptz,
    input_tokens                bigint,
    output_tokens               bigint,
    cache_read_input_tokens     bigint,
    cache_creation_input_tokens bigint,
    -- numeric, not double: costs are summed over millions of spans and must
    -- add up to the cent on invoices.
    cost_usd                    numeric(18, 9),
    input                       text,
    output                      text,
    attributes                  jsonb       NOT NULL DEFAULT '{}',
    variants                    jsonb       NOT NULL DEFAULT '{}',
    ingested_at                 timestamptz NOT NULL DEFAULT now(),

    -- start_time is part of the key only because TimescaleDB requires the
    -- partitioning column in every unique index of a hypertable. A span's
    -- (trace_id, span_id) is unique on its own; writers must always send the
    -- span's real start_time so that replays hit the same row (upsert with
    -- ON CONFLICT (trace_id, span_id, start_time)). Lookups by trace_id use
    -- this index's leading column, so no separate trace_id index is needed.
    CONSTRAINT spans_pkey PRIMARY KEY (trace_id, span_id, start_time),
    CONSTRAINT spans_kind_check CHECK (
        kind IN ('llm', 'tool', 'retrieval', 'agent', 'chain', 'embedding', 'other')
    ),
    CONSTRAINT spans_status_check CHECK (status IN ('unset', 'ok', 'error')),
    CONSTRAINT spans_time_order_check CHECK (end_time >= start_time),
    CONSTRAINT spans_tokens_check CHECK (
        input_tokens >= 0
        AND output_tokens >= 0
        AND cache_read_input_tokens >= 0
        AND cache_creation_input_tokens >= 0
    ),
    CONSTRAINT spans_cost_check CHECK (cost_usd >= 0),
    CONSTRAINT spans_attributes_check CHECK (jsonb_typeof(attributes) = 'object'),
    CONSTRAINT spans_variants_check CHECK (jsonb_typeof(variants) = 'object')
);

COMMENT ON TABLE spans IS
    'One row per finished span (LLM call, tool call, retrieval, agent step). '
    'Hypertable on start_time when TimescaleDB is installed.';
COMMENT ON COLUMN spans.variants IS 'Experiment key -> assigned variant.';
COMMENT ON COLUMN spans.attributes IS 'Remaining (normalised, PII-masked) span attributes.';

-- Hypertable when the extension is installed in this database; the migrator
-- installs it beforehand whenever the server offers it. Without it, spans is
-- a plain table and retention falls back to DELETE by start_time.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;
    END IF;
    -- Our own indexes below are identical on both backends, hence
    -- create_default_indexes => FALSE. The by_range() interface exists since
    -- TimescaleDB 2.13, which deprecated the older (column name) signature.
    IF EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'by_range') THEN
        EXECUTE $sql$
            SELECT create_hypertable(
                'spans', by_range('start_time', INTERVAL '1 day'),
                create_default_indexes => FALSE,
                if_not_exists          => TRUE,
                migrate_data           => TRUE)
        $sql$;
    ELSE
        EXECUTE $sql$
            SELECT create_hypertable(
                'spans', 'start_time',
                chunk_time_interval    => INTERVAL '1 day',
                create_default_indexes => FALSE,
                if_not_exists          => TRUE,
                migrate_data           => TRUE)
        $sql$;
    END IF;
END
$$;

-- Time-range scans across projects (Grafana overview panels, retention).
CREATE INDEX spans_start_time_idx ON spans (start_time DESC);
-- The main dashboard filter: one project, newest first.
CREATE INDEX spans_project_start_time_idx ON spans (project, start_time DESC);
-- Per-user history; anonymous spans are not indexed (WHERE user_id = $1
-- implies user_id IS NOT NULL, so the planner can still use it).
CREATE INDEX spans_user_start_time_idx ON spans (user_id, start_time DESC)
    WHERE user_id IS NOT NULL;
-- Errors are rare: a partial index keeps "recent errors" cheap and small.
CREATE INDEX spans_errors_idx ON spans (project, start_time DESC)
    WHERE status = 'error';


-- traces stays a plain table even with TimescaleDB: its key is trace_id
-- alone, and its start_time moves earlier when a late root span arrives, so
-- it cannot be a partitioning column.
CREATE TABLE traces (
    trace_id      text        NOT NULL,
    project       text        NOT NULL,
    root_span_id  text,
    root_name     text,
    start_time    timestamptz NOT NULL,
    end_time      timestamptz NOT NULL,
    duration_ms   double precision
                  GENERATED ALWAYS AS (
                      (EXTRACT(EPOCH FROM (end_time - start_time)) * 1000)::double precision
                  ) STORED,
    status        text        NOT NULL DEFAULT 'unset',
    span_count    integer     NOT NULL DEFAULT 0,
    error_count   integer     NOT NULL DEFAULT 0,
    input_tokens  bigint      NOT NULL DEFAULT 0,
    output_tokens bigint      NOT NULL DEFAULT 0,
    total_tokens  bigint      GENERATED ALWAYS AS (input_tokens + output_tokens) STORED,
    cost_usd      numeric(18, 9) NOT NULL DEFAULT 0,
    user_id       text,
    session_id    text,
    updated_at    timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT traces_pkey PRIMARY KEY (trace_id),
    CONSTRAINT traces_status_check CHECK (status IN ('unset', 'ok', 'error')),
    CONSTRAINT traces_time_order_check CHECK (end_time >= start_time),
    CONSTRAINT traces_counts_check CHECK (
        span_count >= 0 AND error_count >= 0 AND error_count <= span_count
    ),
    CONSTRAINT traces_tokens_check CHECK (input_tokens >= 0 AND output_tokens >= 0),
    CONSTRAINT traces_cost_check CHECK (cost_usd >= 0)
);

COMMENT ON TABLE traces IS
    'One summary row per trace, recomputed from spans by llmpulse_refresh_traces(); '
    'status is error when any span errored.';

-- Keyset pagination of the trace list:
--   WHERE project = $1 AND (start_time, trace_id) < ($2, $3)
--   ORDER BY start_time DESC, trace_id DESC
-- Both sort keys DESC so the row comparison walks the index in one direction.
CREATE INDEX traces_project_start_time_idx ON traces (project, start_time DESC, trace_id DESC);
CREATE INDEX traces_start_time_idx ON traces (start_time DESC);
CREATE INDEX traces_user_start_time_idx ON traces (user_id, start_time DESC)
    WHERE user_id IS NOT NULL;
CREATE INDEX traces_errors_idx ON traces (project, start_time DESC)
    WHERE status = 'error';
