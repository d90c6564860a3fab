-- 0009_metric_window_inbox: the metrics store appends, a compactor merges.
--
-- Never edit this file once it has landed: add a new numbered migration.
--
-- The metrics-store sink used to merge every partial window it consumed into
-- metric_window_parts and metric_windows before committing its offsets, so
-- its throughput was that of the merge (about a tenth of a plain COPY of the
-- same rows). It now COPYs each partial, with its series' dimensions, into
-- this inbox (no index, no key: an append) and commits; the metrics-compactor
-- job moves rows out of the inbox in batches and merges them exactly as the
-- sink did, in one transaction per batch (delete from the inbox, upsert parts
-- by rank, recompute the minutes, queue the hours). A replayed partial simply
-- lands here twice and loses to itself by rank, so nothing double counts; a
-- crash on either side loses nothing, the inbox being durable.

CREATE TABLE metric_window_inbox (
    LIKE metric_window_parts INCLUDING DEFAULTS,
    project         text NOT NULL,
    model           text NOT NULL,
    provider        text NOT NULL,
    prompt_version  text NOT NULL,
    kind            text NOT NULL,
    cohort          text NOT NULL,
    variant         text NOT NULL
);

COMMENT ON TABLE metric_window_inbox IS
    'Partial 1-minute windows appended by the metrics-store sink, not yet merged by the metrics-compactor job.';
