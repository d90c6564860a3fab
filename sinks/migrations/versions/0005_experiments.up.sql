-- 0005_experiments: experiment definitions, their version history, and exposures.
--
-- Never edit this file once it has landed: the migrator stores its checksum
-- and refuses to run against a database where it changed. Add a new
-- numbered migration instead.
--
-- Written only by the experiments-store and exposures-store sinks
-- (sinks/experiment_store.py) from the compacted llm.experiments topic and
-- from llm.exposures; `llmpulse experiments ...` reads them.

CREATE TABLE experiments (
    key               text        NOT NULL,
    hypothesis        text        NOT NULL,
    -- [{"name": ..., "weight": ..., "payload": {...}}, ...]; the first is the control.
    variants          jsonb       NOT NULL,
    coverage          double precision NOT NULL,
    -- GrowthBook-style JSON condition as text (exactly as published); NULL = everyone.
    targeting         text,
    namespace_name    text,
    namespace_start   double precision,
    namespace_end     double precision,
    primary_metric    text        NOT NULL,
    secondary_metrics text[]      NOT NULL DEFAULT '{}',
    guardrail_metrics text[]      NOT NULL DEFAULT '{}',
    min_sample_size   bigint      NOT NULL,
    status            text        NOT NULL,
    owner             text        NOT NULL,
    seed              text        NOT NULL,
    hash_version      integer     NOT NULL,
    created_at        timestamptz NOT NULL,
    -- The definition's own timestamp: the row holds the version with the
    -- newest updated_at, whatever order the versions arrive in.
    updated_at        timestamptz NOT NULL,
    -- Derived from experiment_versions: the updated_at of the first running
    -- (stopped) version seen. NULL when that version was never seen, e.g. a
    -- database rebuilt from a compacted topic that only kept the stopped one.
    started_at        timestamptz,
    stopped_at        timestamptz,
    ingested_at       timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT experiments_pkey PRIMARY KEY (key),
    CONSTRAINT experiments_status_check CHECK (status IN ('draft', 'running', 'stopped')),
    CONSTRAINT experiments_variants_check CHECK (jsonb_typeof(variants) = 'array'),
    -- A namespace is all three columns or none.
    CONSTRAINT experiments_namespace_check CHECK (
        (namespace_name IS NULL) = (namespace_start IS NULL)
        AND (namespace_name IS NULL) = (namespace_end IS NULL)
    ),
    CONSTRAINT experiments_min_sample_size_check CHECK (min_sample_size >= 1)
);

COMMENT ON TABLE experiments IS
    'Latest definition per experiment key (newest updated_at wins), from the compacted '
    'llm.experiments topic. A tombstone on the topic deletes the row; experiment_versions keeps the history.';
COMMENT ON COLUMN experiments.started_at IS
    'updated_at of the first running version seen (NULL for drafts, or when that version was compacted away).';
COMMENT ON COLUMN experiments.stopped_at IS
    'updated_at of the first stopped version seen; NULL unless status is stopped.';

-- `llmpulse experiments list --status running` and the namespace check before start.
CREATE INDEX experiments_status_idx ON experiments (status);


CREATE TABLE experiment_versions (
    key          text        NOT NULL,
    updated_at   timestamptz NOT NULL,
    status       text        NOT NULL,
    -- The whole record as natural JSON (timestamps as ISO-8601 strings).
    definition   jsonb       NOT NULL,
    ingested_at  timestamptz NOT NULL DEFAULT now(),

    -- One row per version: a redelivered version changes nothing.
    CONSTRAINT experiment_versions_pkey PRIMARY KEY (key, updated_at),
    CONSTRAINT experiment_versions_status_check CHECK (status IN ('draft', 'running', 'stopped')),
    CONSTRAINT experiment_versions_definition_check CHECK (jsonb_typeof(definition) = 'object')
);

COMMENT ON TABLE experiment_versions IS
    'Every experiment definition version seen on llm.experiments, for audit. Never updated.';


CREATE TABLE exposures (
    experiment_key    text        NOT NULL,
    user_id           text        NOT NULL,
    -- Variant, project and source of the earliest exposure seen.
    variant           text        NOT NULL,
    project           text        NOT NULL,
    source            text        NOT NULL,
    first_exposed_at  timestamptz NOT NULL,
    last_exposed_at   timestamptz NOT NULL,
    -- At-least-once: a batch redelivered after a crash between the database
    -- write and the offset commit is counted again, so this is an upper
    -- bound. Everything else in the row is exact under redelivery.
    exposure_count    bigint      NOT NULL,
    -- Every variant this user was exposed to, sorted. More than one means
    -- assignment disagreed somewhere (changed seed, buggy producer): such
    -- users must be excluded from the analysis.
    variants_seen     text[]      NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT exposures_pkey PRIMARY KEY (experiment_key, user_id),
    CONSTRAINT exposures_time_check CHECK (first_exposed_at <= last_exposed_at),
    CONSTRAINT exposures_count_check CHECK (exposure_count >= 1),
    CONSTRAINT exposures_variants_seen_check CHECK (cardinality(variants_seen) >= 1)
);

COMMENT ON TABLE exposures IS
    'One row per (experiment, user): the first exposure decides the variant; '
    'the denominator of every experiment metric.';
COMMENT ON COLUMN exposures.exposure_count IS
    'Exposure events seen; an upper bound (a redelivered batch is counted again).';
COMMENT ON COLUMN exposures.variants_seen IS
    'Distinct variants the user was exposed to; cardinality > 1 flags an inconsistent assignment.';

-- Users per variant of one experiment (`experiments show`, results). The
-- primary key serves one experiment; this one also covers the variant.
CREATE INDEX exposures_variant_idx ON exposures (experiment_key, variant);
