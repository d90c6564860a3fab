-- 0008_metric_rollup_queue (down).
DROP TABLE IF EXISTS metric_rollup_queue;
