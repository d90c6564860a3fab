-- Undo 0001_spans_traces.
--
-- CASCADE on purpose: views and functions from sinks/migrations/idempotent/
-- are written after this file and depend on these tables (functions use
-- BEGIN ATOMIC bodies so PostgreSQL records that dependency). This frozen
-- file cannot name them, so it lets PostgreSQL drop them; the migrator
-- re-applies whichever idempotent files still fit the remaining schema.
DROP TABLE IF EXISTS traces CASCADE;
DROP TABLE IF EXISTS spans CASCADE;
