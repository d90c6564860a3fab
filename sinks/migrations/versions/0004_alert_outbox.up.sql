-- 0004_alert_outbox: the Slack notifier's outbox, its episode memory and its
-- record of every alert it has seen.
--
-- Never edit this file once it has landed: the migrator stores its checksum
-- and refuses to run against a database where it changed. Add a new
-- numbered migration instead.
--
-- The notifier (sinks/slack, docs/slack.md) consumes llm.alerts and, in one
-- transaction per batch, records each alert in alert_seen (a redelivered
-- alert_id is a duplicate and stops there), updates its episode in
-- alert_episodes, and queues the Slack posts the episode needs in
-- alert_outbox; only then are the Kafka offsets committed. A delivery loop
-- sends pending rows oldest first per webhook and marks them sent or failed.
-- Webhook URLs carry a token: tables hold webhook *names* only.

CREATE TABLE alert_seen (
    alert_id    text        NOT NULL,
    episode_id  text        NOT NULL,
    status      text        NOT NULL,
    severity    text        NOT NULL,
    -- open | escalate | resolve | suppress | unrouted
    decision    text        NOT NULL,
    reason      text        NOT NULL,
    alert_time  timestamptz NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alert_seen_pkey PRIMARY KEY (alert_id),
    CONSTRAINT alert_seen_decision_check
        CHECK (decision IN ('open', 'escalate', 'resolve', 'suppress', 'unrouted'))
);

COMMENT ON TABLE alert_seen IS
    'Every alert the Slack notifier consumed, once (alert_id is the dedupe key), with what it decided and why.';

CREATE TABLE alert_episodes (
    episode_id  text        NOT NULL,
    status      text        NOT NULL,
    -- The highest severity posted: a later firing is posted only above it.
    severity    text        NOT NULL,
    -- Title and time of the opening post, quoted by the resolve message.
    title       text        NOT NULL,
    opened_at   timestamptz NOT NULL,
    resolved_at timestamptz,
    -- Webhooks the episode was posted to; the resolve goes to all of them.
    webhooks    text[]      NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alert_episodes_pkey PRIMARY KEY (episode_id),
    CONSTRAINT alert_episodes_status_check CHECK (status IN ('open', 'resolved')),
    CONSTRAINT alert_episodes_severity_check CHECK (severity IN ('info', 'warning', 'critical'))
);

COMMENT ON TABLE alert_episodes IS
    'Alert episodes as the Slack notifier knows them: one post on open, on escalation and on resolve.';

CREATE TABLE alert_outbox (
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    alert_id        text        NOT NULL,
    episode_id      text        NOT NULL,
    webhook         text        NOT NULL,
    -- open | escalate | resolve
    action          text        NOT NULL,
    -- The Slack message as posted (Block Kit JSON).
    payload         jsonb       NOT NULL,
    state           text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    CONSTRAINT alert_outbox_pkey PRIMARY KEY (id),
    -- One alert is posted at most once per webhook (a resolve may go to
    -- several webhooks, each of which saw the episode open).
    CONSTRAINT alert_outbox_alert_webhook_key UNIQUE (alert_id, webhook),
    CONSTRAINT alert_outbox_state_check CHECK (state IN ('pending', 'sent', 'failed')),
    CONSTRAINT alert_outbox_action_check CHECK (action IN ('open', 'escalate', 'resolve')),
    CONSTRAINT alert_outbox_attempts_check CHECK (attempts >= 0),
    CONSTRAINT alert_outbox_sent_check CHECK ((state = 'sent') = (sent_at IS NOT NULL))
);

-- The delivery loop reads the oldest pending row of each webhook.
CREATE INDEX alert_outbox_pending_idx ON alert_outbox (webhook, id) WHERE state = 'pending';

COMMENT ON TABLE alert_outbox IS
    'Slack posts waiting, sent or failed; at-least-once delivery, retried with backoff until sent or failed.';
COMMENT ON COLUMN alert_outbox.last_error IS
    'Why the last attempt did not succeed (HTTP status and Slack''s answer, or the connection error).';
