-- Undo 0007_experiment_results.
DROP VIEW IF EXISTS experiment_results_latest;
DROP TABLE IF EXISTS experiment_results CASCADE;
