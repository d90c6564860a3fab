-- 0006_anomalies: anomaly episodes, their root cause and people's verdicts.
--
-- Never edit this file once it has landed: add a new numbered migration.
--
-- One row per episode (anomaly_id), written by the anomaly store sink from
-- llm.anomalies: the newest state of the episode wins, a closed episode is
-- never reopened by a redelivered older event. The sink adds the root cause
-- (computed once from metric_windows when it first sees the episode) and
-- records which alerts it delivered, so a replayed batch alerts nobody
-- twice. `llmpulse anomalies ack|false-positive` sets the acked_* and
-- feedback columns. The anomaly feed dashboard reads this table.

CREATE TABLE anomalies (
    anomaly_id      text        NOT NULL,
    series          text        NOT NULL,
    metric          text        NOT NULL,
    dimensions      jsonb       NOT NULL DEFAULT '{}',
    -- dimensions->>'project', kept as a column: the feed filters and
    -- alerts route by it.
    project         text        NOT NULL,
    status          text        NOT NULL,
    severity        text        NOT NULL,
    -- Highest severity the episode reached: an alert goes out when it rises.
    peak_severity   text        NOT NULL,
    score           double precision NOT NULL,
    observed        double precision NOT NULL,
    expected        double precision NOT NULL,
    lower           double precision NOT NULL,
    upper           double precision NOT NULL,
    count           bigint      NOT NULL,
    window_start    timestamptz NOT NULL,
    window_seconds  integer     NOT NULL,
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz,
    points          integer     NOT NULL,
    detector        text        NOT NULL,
    root_cause      text,
    recommendation  text,
    -- Ranked causes: [{"filters": {...}, "explanatory_power": .., "surprise": ..,
    -- "baseline": .., "observed": .., "change": ..}, ...]
    segments        jsonb       NOT NULL DEFAULT '[]',
    -- Grafana trace-list URLs: the anomaly's scope, then each cause's segment.
    trace_links     text[]      NOT NULL DEFAULT '{}',
    root_cause_at   timestamptz,
    -- alert_ids already produced to llm.alerts for this episode.
    alerts_sent     text[]      NOT NULL DEFAULT '{}',
    acked_by        text,
    acked_at        timestamptz,
    feedback_note   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT anomalies_pkey PRIMARY KEY (anomaly_id),
    CONSTRAINT anomalies_status_check CHECK (status IN ('open', 'resolved', 'false_positive')),
    CONSTRAINT anomalies_severity_check CHECK (
        severity IN ('info', 'warning', 'critical') AND peak_severity IN ('info', 'warning', 'critical')
    ),
    CONSTRAINT anomalies_dimensions_check CHECK (jsonb_typeof(dimensions) = 'object'),
    CONSTRAINT anomalies_segments_check CHECK (jsonb_typeof(segments) = 'array'),
    CONSTRAINT anomalies_counts_check CHECK (points >= 1 AND count >= 0 AND window_seconds > 0),
    -- Closed episodes have an end; the sink fills one in when an event lacks it.
    CONSTRAINT anomalies_ended_check CHECK ((status = 'open') = (ended_at IS NULL))
);

COMMENT ON TABLE anomalies IS
    'One row per anomaly episode (llm.anomalies), with its root cause, delivered alerts and verdicts.';
COMMENT ON COLUMN anomalies.observed IS 'Metric value in the latest anomalous window.';
COMMENT ON COLUMN anomalies.expected IS 'What the detector expected for that window; band is lower..upper.';
COMMENT ON COLUMN anomalies.score IS 'Detector score of the worst point so far, 0..1.';

-- The feed: open episodes first, newest first.
CREATE INDEX anomalies_status_started_idx ON anomalies (status, started_at DESC);
-- The feed and the CLI over a time range, any status; one project.
CREATE INDEX anomalies_started_idx ON anomalies (started_at DESC);
CREATE INDEX anomalies_project_started_idx ON anomalies (project, started_at DESC);
