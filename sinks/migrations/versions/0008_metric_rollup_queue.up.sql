-- 0008_metric_rollup_queue: hours and days rolled up in the background.
--
-- Never edit this file once it has landed: add a new numbered migration.
--
-- Rolling a changed minute up into its hour re-reads every minute of that
-- hour; doing it on every batch made the metrics store spend most of its time
-- on hours and days and delayed the minutes dashboards and detectors need.
-- The store now writes a changed (series, hour) here in the same transaction
-- as the minute, and rolls queued hours (and their days) up every few
-- seconds in a separate transaction that also deletes them from the queue.
-- A crash between the two loses nothing: the queue is durable.

CREATE TABLE metric_rollup_queue (
    series     text        NOT NULL,
    hour       timestamptz NOT NULL,
    queued_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT metric_rollup_queue_pkey PRIMARY KEY (series, hour)
);

COMMENT ON TABLE metric_rollup_queue IS
    '(series, hour) whose 1-minute windows changed and whose 1h and 1d rows are not rolled up yet.';
