-- Undo 0002_metrics_feedback.
--
-- CASCADE on purpose, as in 0001: views from sinks/migrations/idempotent/
-- (metric_windows_rates) depend on these tables and are written after this
-- file; PostgreSQL drops them here and the migrator re-applies whichever
-- idempotent files still fit the remaining schema.
DROP TABLE IF EXISTS metric_windows CASCADE;
DROP TABLE IF EXISTS metric_window_parts CASCADE;
DROP TABLE IF EXISTS feedback CASCADE;
