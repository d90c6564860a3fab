-- 0007_experiment_results: the statistics of running experiments, once a minute.
--
-- Never edit this file once it has landed: the migrator stores its checksum
-- and refuses to run against a database where it changed. Add a new
-- numbered migration instead.
--
-- Written only by the experiment-results worker
-- (processors/experiments/results_worker.py): every computation inserts one
-- row per (metric, variant) with the same computed_at, so the table is the
-- history of every number the verdict rested on, and the newest computation
-- of an experiment is what the dashboard and `llmpulse experiments results`
-- show (view experiment_results_latest).
--
-- The unit of the tests is the request (an LLM call, a rating, a thumb),
-- because metric_windows keeps sums per window, not per user; `exposures`
-- counts users and feeds the sample-ratio-mismatch test. See
-- docs/experiments.md, "Unit of analysis".

CREATE TABLE experiment_results (
    experiment_key          text        NOT NULL,
    computed_at             timestamptz NOT NULL,
    metric                  text        NOT NULL,
    variant                 text        NOT NULL,
    role                    text        NOT NULL,
    is_control              boolean     NOT NULL,
    project                 text,
    -- Units of the metric (requests, priced requests, ratings, thumbs) and
    -- their mean; NULL when the metric has no data source (see note).
    n                       double precision,
    mean                    double precision,
    -- Users exposed to this variant (consistent assignment only).
    exposures               bigint      NOT NULL,
    -- Variant against control, fixed-horizon (valid for one look at the
    -- planned size): absolute and relative lift with their 1 - alpha
    -- intervals, raw and Holm-adjusted p-values. NULL on control rows and
    -- where an interval is unbounded (not enough data).
    lift_abs                double precision,
    lift_abs_low            double precision,
    lift_abs_high           double precision,
    lift_rel                double precision,
    lift_rel_low            double precision,
    lift_rel_high           double precision,
    p_value                 double precision,
    p_holm                  double precision,
    -- Sequential (always valid, may be read at every refresh): confidence
    -- sequence of the relative lift and its p-value, raw and Holm-adjusted.
    -- These decide the verdict.
    seq_lift_low            double precision,
    seq_lift_high           double precision,
    seq_p_value             double precision,
    seq_p_holm              double precision,
    -- Bayesian (flat prior): chance the variant beats control on this
    -- metric (direction-aware) and expected loss of shipping it (relative).
    chance_to_beat_control  double precision,
    expected_loss           double precision,
    significant             boolean,
    direction               text,
    method                  text,
    -- Experiment-level, repeated on every row of one computation.
    srm_p_value             double precision NOT NULL,
    srm_flagged             boolean     NOT NULL,
    decision                text        NOT NULL,
    verdict                 text        NOT NULL,
    verdict_variant         text,
    verdict_reason          text        NOT NULL,
    units_remaining         bigint,
    note                    text        NOT NULL DEFAULT '',

    CONSTRAINT experiment_results_pkey PRIMARY KEY (experiment_key, computed_at, metric, variant),
    CONSTRAINT experiment_results_role_check CHECK (role IN ('primary', 'secondary', 'guardrail')),
    CONSTRAINT experiment_results_verdict_check CHECK (
        verdict IN ('keep_running', 'ship', 'no_difference', 'invalid')
    ),
    CONSTRAINT experiment_results_decision_check CHECK (
        decision IN ('keep_running', 'ship', 'no_difference', 'srm', 'guardrail_breached')
    ),
    CONSTRAINT experiment_results_direction_check CHECK (direction IN ('better', 'worse', 'none')),
    CONSTRAINT experiment_results_probability_check CHECK (
        (p_value IS NULL OR p_value BETWEEN 0 AND 1)
        AND (seq_p_value IS NULL OR seq_p_value BETWEEN 0 AND 1)
        AND (chance_to_beat_control IS NULL OR chance_to_beat_control BETWEEN 0 AND 1)
        AND srm_p_value BETWEEN 0 AND 1
    )
);

COMMENT ON TABLE experiment_results IS
    'Per experiment, computation, metric and variant: the numbers behind the verdict. '
    'Written once a minute by the experiment-results worker; never updated.';
COMMENT ON COLUMN experiment_results.decision IS
    'The verdict as one word: ship, keep_running, no_difference, srm or guardrail_breached '
    '(both invalid). A change of decision raises an alert on llm.alerts.';
COMMENT ON COLUMN experiment_results.n IS
    'Units of the metric in this variant: requests (LLM calls), priced requests, ratings or thumbs, '
    'not users (see docs/experiments.md, unit of analysis).';

-- Hypertable when TimescaleDB is installed, as in 0001 and 0002: about
-- twenty rows a minute per running experiment.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'by_range') THEN
        PERFORM create_hypertable('experiment_results', by_range('computed_at', INTERVAL '7 days'),
                                  create_default_indexes => FALSE, if_not_exists => TRUE);
    ELSE
        PERFORM create_hypertable('experiment_results', 'computed_at',
                                  chunk_time_interval => INTERVAL '7 days',
                                  create_default_indexes => FALSE, if_not_exists => TRUE);
    END IF;
END
$$;

-- The primary key serves "newest computation of one experiment" (backward
-- scan) and one experiment's history; the dashboard's lift-over-time panel
-- reads one experiment and metric over a time range.
CREATE INDEX experiment_results_metric_idx ON experiment_results (experiment_key, metric, computed_at DESC);

-- Through experiments so that each key's newest computed_at is one
-- backward index probe, instead of a GROUP BY over the whole history.
CREATE VIEW experiment_results_latest AS
SELECT r.*
FROM experiments e
CROSS JOIN LATERAL (
    SELECT max(computed_at) AS computed_at
    FROM experiment_results
    WHERE experiment_key = e.key
) newest
JOIN experiment_results r
  ON r.experiment_key = e.key AND r.computed_at = newest.computed_at;

COMMENT ON VIEW experiment_results_latest IS
    'The newest computation of every experiment in experiments: one row per (metric, variant).';
