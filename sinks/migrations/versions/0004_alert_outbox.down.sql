-- Undo 0004_alert_outbox. Queued, unsent Slack posts are lost with it.
DROP TABLE IF EXISTS alert_outbox;
DROP TABLE IF EXISTS alert_episodes;
DROP TABLE IF EXISTS alert_seen;
