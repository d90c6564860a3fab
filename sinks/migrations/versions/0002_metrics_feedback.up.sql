-- 0002_metrics_feedback: user feedback, and windowed metrics per series.
--
-- Never edit this file once it has landed: the migrator stores its checksum
-- and refuses to run against a database where it changed. Add a new
-- numbered migration instead.
--
-- The metrics processor emits 1-minute partial windows per source Kafka
-- partition (topic llm.metric_windows); the metrics sink keeps them in
-- metric_window_parts and writes their exact merge, plus 1-hour and 1-day
-- rollups, to metric_windows, which dashboards read.

CREATE TABLE feedback (
    feedback_id  text        NOT NULL,
    trace_id     text        NOT NULL,
    span_id      text,
    user_id      text        NOT NULL,
    project      text        NOT NULL,
    time         timestamptz NOT NULL,
    rating       double precision,
    thumbs       boolean,
    comment      text,
    attributes   jsonb       NOT NULL DEFAULT '{}',
    ingested_at  timestamptz NOT NULL DEFAULT now(),

    -- time is in the key only because TimescaleDB requires the partitioning
    -- column in every unique index of a hypertable; feedback_id alone is
    -- unique. Writers upsert ON CONFLICT (feedback_id, time) with the
    -- event's real time so redeliveries hit the same row.
    CONSTRAINT feedback_pkey PRIMARY KEY (feedback_id, time),
    -- NULL passes a CHECK: a thumbs-only or comment-only event has no rating.
    CONSTRAINT feedback_rating_check CHECK (rating BETWEEN 1 AND 5),
    CONSTRAINT feedback_attributes_check CHECK (jsonb_typeof(attributes) = 'object')
);

COMMENT ON TABLE feedback IS
    'User or reviewer feedback on a trace (or one span of it). '
    'Hypertable on time when TimescaleDB is installed.';
COMMENT ON COLUMN feedback.rating IS 'Score on a 1..5 scale (5 best); NULL when not given.';
COMMENT ON COLUMN feedback.thumbs IS 'true = thumbs up, false = down, NULL = not given.';


CREATE TABLE metric_window_parts (
    series          text        NOT NULL,
    window_start    timestamptz NOT NULL,
    partition       integer     NOT NULL,
    request_count   bigint      NOT NULL,
    error_count     bigint      NOT NULL,
    input_tokens    bigint      NOT NULL,
    output_tokens   bigint      NOT NULL,
    cached_tokens   bigint      NOT NULL,
    usage_count     bigint      NOT NULL,
    cost_usd        numeric(18, 9) NOT NULL,
    cost_count      bigint      NOT NULL,
    feedback_count  bigint      NOT NULL,
    rating_sum      double precision NOT NULL,
    rating_count    bigint      NOT NULL,
    thumbs_up       bigint      NOT NULL,
    thumbs_count    bigint      NOT NULL,
    late_events     bigint      NOT NULL,
    p50_ms          double precision,
    p90_ms          double precision,
    p95_ms          double precision,
    p99_ms          double precision,
    sketch          bytea       NOT NULL,
    final           boolean     NOT NULL,
    -- The processor's emit time: breaks ties between partials with equal
    -- counts, so a redelivered older message never replaces a newer one.
    emitted_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT metric_window_parts_pkey PRIMARY KEY (series, window_start, partition),
    CONSTRAINT metric_window_parts_partition_check CHECK (partition >= 0),
    CONSTRAINT metric_window_parts_counts_check CHECK (
        request_count >= 0 AND error_count >= 0 AND error_count <= request_count
        AND input_tokens >= 0 AND output_tokens >= 0 AND cached_tokens >= 0
        AND usage_count >= 0 AND cost_usd >= 0 AND cost_count >= 0
        AND feedback_count >= 0 AND rating_count >= 0
        AND thumbs_up >= 0 AND thumbs_count >= 0 AND thumbs_up <= thumbs_count
        AND late_events >= 0
    )
);

COMMENT ON TABLE metric_window_parts IS
    'Latest 1-minute partial window per (series, window_start, source partition), as emitted '
    'by the metrics processor; metric_windows holds their merge. Written only by the metrics sink.';


-- Dimension columns are NOT NULL: the aggregator writes 'none' / 'unknown' /
-- 'other' instead of NULL, and a NULL would drop rows from GROUP BY panels.
CREATE TABLE metric_windows (
    resolution      text        NOT NULL,
    window_start    timestamptz NOT NULL,
    window_seconds  integer     NOT NULL,
    series          text        NOT NULL,
    project         text        NOT NULL,
    model           text        NOT NULL,
    provider        text        NOT NULL,
    prompt_version  text        NOT NULL,
    kind            text        NOT NULL,
    cohort          text        NOT NULL,
    variant         text        NOT NULL,
    request_count   bigint      NOT NULL,
    error_count     bigint      NOT NULL,
    input_tokens    bigint      NOT NULL,
    output_tokens   bigint      NOT NULL,
    cached_tokens   bigint      NOT NULL,
    usage_count     bigint      NOT NULL,
    -- numeric, not double: summed over months of windows for invoices.
    cost_usd        numeric(18, 9) NOT NULL,
    cost_count      bigint      NOT NULL,
    feedback_count  bigint      NOT NULL,
    rating_sum      double precision NOT NULL,
    rating_count    bigint      NOT NULL,
    thumbs_up       bigint      NOT NULL,
    thumbs_count    bigint      NOT NULL,
    late_events     bigint      NOT NULL,
    p50_ms          double precision,
    p90_ms          double precision,
    p95_ms          double precision,
    p99_ms          double precision,
    sketch          bytea       NOT NULL,
    partitions      integer     NOT NULL,
    final           boolean     NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT metric_windows_pkey PRIMARY KEY (resolution, series, window_start),
    CONSTRAINT metric_windows_resolution_check CHECK (
        (resolution, window_seconds) IN (('1m', 60), ('1h', 3600), ('1d', 86400))
    ),
    CONSTRAINT metric_windows_counts_check CHECK (
        request_count >= 0 AND error_count >= 0 AND error_count <= request_count
        AND input_tokens >= 0 AND output_tokens >= 0 AND cached_tokens >= 0
        AND usage_count >= 0 AND cost_usd >= 0 AND cost_count >= 0
        AND feedback_count >= 0 AND rating_count >= 0
        AND thumbs_up >= 0 AND thumbs_count >= 0 AND thumbs_up <= thumbs_count
        AND late_events >= 0 AND partitions >= 1
    )
);

COMMENT ON TABLE metric_windows IS
    'Windowed metrics per series at 1m, 1h and 1d: the exact merge of the processor''s '
    'per-partition partials (sums and merged latency sketches, never averages of averages).';
COMMENT ON COLUMN metric_windows.sketch IS
    'Latency DDSketch (DDSketch protobuf); merge rows by adding bins, then read quantiles.';
COMMENT ON COLUMN metric_windows.partitions IS
    'How many 1-minute partials were merged into this row.';
COMMENT ON COLUMN metric_windows.final IS
    'Every row merged into this one was final (no open partial left among those written so far).';


-- Hypertables when the extension is installed in this database, as in
-- 0001. Chunk sizes follow how much each table holds per day: feedback and
-- the rollups are small, partials are many but short-lived.
DO $$
DECLARE
    spec record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;
    END IF;
    FOR spec IN
        SELECT * FROM (VALUES
            ('feedback',            'time',         INTERVAL '7 days'),
            ('metric_window_parts', 'window_start', INTERVAL '1 day'),
            ('metric_windows',      'window_start', INTERVAL '7 days')
        ) AS t (table_name, time_column, chunk)
    LOOP
        IF EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'by_range') THEN
            EXECUTE format(
                'SELECT create_hypertable(%L, by_range(%L, %L::interval),'
                ' create_default_indexes => FALSE, if_not_exists => TRUE, migrate_data => TRUE)',
                spec.table_name, spec.time_column, spec.chunk);
        ELSE
            EXECUTE format(
                'SELECT create_hypertable(%L, %L, chunk_time_interval => %L::interval,'
                ' create_default_indexes => FALSE, if_not_exists => TRUE, migrate_data => TRUE)',
                spec.table_name, spec.time_column, spec.chunk);
        END IF;
    END LOOP;
END
$$;

-- Feedback of one trace (the trace view, joins to spans).
CREATE INDEX feedback_trace_id_idx ON feedback (trace_id);
-- Dashboard panels: one project, newest first.
CREATE INDEX feedback_project_time_idx ON feedback (project, time DESC);

-- The primary key (series, window_start, partition) serves the sink's
-- reads (all partials of a window) and upserts; nothing else reads parts.

-- Dashboards: one project at one resolution, newest first. The primary
-- key (resolution, series, window_start) serves one series and the sink's
-- rollup reads.
CREATE INDEX metric_windows_project_idx ON metric_windows (resolution, project, window_start DESC);
-- All projects at one resolution (overview panels, retention).
CREATE INDEX metric_windows_time_idx ON metric_windows (resolution, window_start DESC);
