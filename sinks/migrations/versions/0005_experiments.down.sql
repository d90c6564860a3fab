-- Undo 0005_experiments.
--
-- CASCADE on purpose, as in 0001: later idempotent views may depend on
-- these tables; the migrator re-applies whichever still fit.
DROP TABLE IF EXISTS exposures CASCADE;
DROP TABLE IF EXISTS experiment_versions CASCADE;
DROP TABLE IF EXISTS experiments CASCADE;
