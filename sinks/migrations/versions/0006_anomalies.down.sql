-- Undo 0006_anomalies.
-- The feed's helper functions (idempotent/0600, requires version 6) depend
-- on no table, so no CASCADE removes them: drop them by name, whatever
-- their signature.
DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT oid::regprocedure FROM pg_proc
             WHERE proname IN ('llmpulse_metric_text', 'llmpulse_anomaly_metric')
               AND pronamespace = 'public'::regnamespace
    LOOP
        EXECUTE 'DROP FUNCTION ' || f;
    END LOOP;
END
$$;
DROP TABLE IF EXISTS anomalies;
