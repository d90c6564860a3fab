-- requires-version: 3
--
-- llmpulse_cohort_compare(metric, since, ...): cohorts compared with a
-- reference cohort, in SQL, for Grafana. The same numbers as
-- `llmpulse cohorts compare` (processors/cohort_stats.py, scipy and
-- statsmodels), to about 1e-12; tests/integration/test_cohort_compare.py
-- holds them to 1e-9.
--
--   SELECT * FROM llmpulse_cohort_compare('success_rate', interval '7 days');
--   SELECT * FROM llmpulse_cohort_compare('cost', since => interval '24 hours',
--                                         project => 'support-bot', reference => 'free');
--
-- metric        success_rate: 1 - error_count / request_count of rows of
--               the given kind; Wilson intervals, Newcombe interval for the
--               difference, pooled two-proportion z-test (Fisher's exact test
--               when an expected count of the 2x2 table is below 5).
--               cost: mean cost_usd per span with a cost (cost_count), all
--               kinds; rating: mean rating (rating_count), all kinds. Both:
--               t intervals and Welch's t-test from the sums of squares.
-- reference     default: the largest cohort (most trials or values; on a
--               tie the first by name), as cohort_stats._pick_reference.
-- alpha         intervals are at 1 - alpha; with several comparisons the
--               p-values are Holm-adjusted (p_holm) and `significant` uses it.
-- until         end of the range (default now()); the range is
--               [until - since, until) on window_start.
-- projects, prompt_versions  optional lists (Grafana multi-value variables);
--               NULL means all. `project` is the single-project shorthand.
--
-- Which rows: a window counts when its window_start is in the range. Whole
-- UTC hours inside the range are read from the '1h' rows and the minutes
-- before the first and after the last whole hour from the '1m' rows: exactly
-- the '1m' rows of the range (a '1h' row is the sum of its minutes), at
-- ~60x fewer rows for long ranges. llmpulse_cohort_sums() is that
-- selection; the CLI calls it too, so both always read the same windows.
--
-- PostgreSQL has no t or normal distribution functions, so they are here:
-- llmpulse_norm_cdf / llmpulse_t_cdf (public) and their helpers. All are
-- plain float8 arithmetic with the textbook algorithms (Numerical Recipes
-- ch. 6: series and Lentz continued fractions for the incomplete gamma and
-- beta functions; Stirling's series for log-gamma), accurate to ~1e-13 or
-- better. PostgreSQL raises on float8 underflow (exp(-800), 1e-200 * 1e-200),
-- where C returns 0: every exp() of a possibly very negative argument goes
-- through llmpulse_exp0, which returns 0 below e^-708.
--
-- Result columns are part of the interface (Grafana panels select them by
-- name): changing them needs a DROP FUNCTION first, as CREATE OR REPLACE
-- cannot change a return type.


-- ---------------------------------------------------------------- numerics

CREATE OR REPLACE FUNCTION llmpulse_exp0(x double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN x < -708.0 THEN 0.0 ELSE exp(x) END;

COMMENT ON FUNCTION llmpulse_exp0(double precision) IS
    'exp(x), but 0 instead of an underflow error below e^-708.';


-- log(1 + x) without losing x when it is tiny (Goldberg's trick: the
-- rounding of 1 + x cancels between the log and the division).
CREATE OR REPLACE FUNCTION llmpulse_log1p(x double precision)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    u double precision := 1.0 + x;
BEGIN
    IF u = 1.0 THEN
        RETURN x;
    END IF;
    RETURN ln(u) * x / (u - 1.0);
END
$$;


-- Stirling's series tail: lgamma(z) - ((z - 1/2) ln z - z + ln(2 pi) / 2),
-- for z >= 10, where six terms leave an error below 1e-15.
CREATE OR REPLACE FUNCTION llmpulse_stirling_tail(z double precision)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    r  double precision := 1.0 / z;
    r2 double precision := r * r;
BEGIN
    RETURN r * (1.0 / 12 + r2 * (-1.0 / 360 + r2 * (1.0 / 1260 + r2 * (-1.0 / 1680
           + r2 * (1.0 / 1188 + r2 * (-691.0 / 360360))))));
END
$$;


-- ln Gamma(x), x > 0: shift up to >= 10 (Gamma(x) = Gamma(x + k) / x(x+1)...)
-- and use Stirling's series there.
CREATE OR REPLACE FUNCTION llmpulse_lgamma(x double precision)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    z double precision := x;
    shift double precision := 1.0;
BEGIN
    IF NOT x > 0 THEN
        RAISE EXCEPTION 'llmpulse_lgamma: x must be > 0, got %', x;
    END IF;
    WHILE z < 10.0 LOOP
        shift := shift * z;
        z := z + 1.0;
    END LOOP;
    RETURN (z - 0.5) * ln(z) - z + 0.918938533204672741780329736406
           + llmpulse_stirling_tail(z) - ln(shift);
END
$$;


-- ln B(a, b). When the larger argument q is >= 10, lgamma(q) - lgamma(p + q)
-- is taken from Stirling's series as one expression: subtracting two large
-- lgamma values would lose digits (for the t distribution, b = 1/2 and
-- a = df/2 can be 10^6).
CREATE OR REPLACE FUNCTION llmpulse_lbeta(a double precision, b double precision)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    p double precision := least(a, b);
    q double precision := greatest(a, b);
BEGIN
    IF q < 10.0 THEN
        RETURN llmpulse_lgamma(p) + llmpulse_lgamma(q) - llmpulse_lgamma(p + q);
    END IF;
    RETURN llmpulse_lgamma(p) - (q - 0.5) * llmpulse_log1p(p / q) - p * ln(p + q) + p
           + llmpulse_stirling_tail(q) - llmpulse_stirling_tail(p + q);
END
$$;


-- Continued fraction of the incomplete beta function (modified Lentz),
-- converging fast for x < (a + 1) / (a + b + 2). xc = 1 - x: its first
-- term 1 - (a + b) x / (a + 1) is written as (1 - b + (a + b) xc) / (a + 1),
-- which does not cancel when x is near 1 (large df, small t).
CREATE OR REPLACE FUNCTION llmpulse_betacf(
    a double precision, b double precision, x double precision, xc double precision)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    fpmin CONSTANT double precision := 1e-300;
    qab double precision := a + b;
    qap double precision := a + 1.0;
    qam double precision := a - 1.0;
    c double precision := 1.0;
    d double precision := CASE WHEN x < 0.5 THEN 1.0 - qab * x / qap
                               ELSE (1.0 - b + qab * xc) / qap END;
    h double precision;
    aa double precision;
    del double precision;
    m2 double precision;
BEGIN
    IF abs(d) < fpmin THEN d := fpmin; END IF;
    d := 1.0 / d;
    h := d;
    -- O(sqrt(max(a, b))) steps: a few thousand for a million requests.
    FOR m IN 1..1000000 LOOP
        m2 := 2.0 * m;
        aa := m * (b - m) * x / ((qam + m2) * (a + m2));
        d := 1.0 + aa * d;
        IF abs(d) < fpmin THEN d := fpmin; END IF;
        c := 1.0 + aa / c;
        IF abs(c) < fpmin THEN c := fpmin; END IF;
        d := 1.0 / d;
        h := h * d * c;
        aa := -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d := 1.0 + aa * d;
        IF abs(d) < fpmin THEN d := fpmin; END IF;
        c := 1.0 + aa / c;
        IF abs(c) < fpmin THEN c := fpmin; END IF;
        d := 1.0 / d;
        del := d * c;
        h := h * del;
        IF abs(del - 1.0) < 1e-15 THEN
            RETURN h;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'llmpulse_betacf(%, %, %) did not converge', a, b, x;
END
$$;


-- Regularized incomplete beta I_x(a, b). Takes x, xc = 1 - x and their
-- logarithms separately so that a caller who knows them exactly keeps their
-- digits: for the t distribution, a = df/2 can be 10^7 and a * ln(x) must
-- not inherit the rounding of x = df / (df + t^2).
CREATE OR REPLACE FUNCTION llmpulse_betainc(
    a double precision, b double precision, x double precision, xc double precision,
    ln_x double precision, ln_xc double precision)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    lfront double precision;
BEGIN
    IF x <= 0.0 THEN RETURN 0.0; END IF;
    IF xc <= 0.0 THEN RETURN 1.0; END IF;
    lfront := a * ln_x + b * ln_xc - llmpulse_lbeta(a, b);
    IF x < (a + 1.0) / (a + b + 2.0) THEN
        RETURN llmpulse_exp0(lfront) * llmpulse_betacf(a, b, x, xc) / a;
    END IF;
    RETURN 1.0 - llmpulse_exp0(lfront) * llmpulse_betacf(b, a, xc, x) / b;
END
$$;


-- Regularized upper incomplete gamma Q(a, x): series for P below a + 1,
-- Lentz continued fraction for Q above (each where it converges fast).
CREATE OR REPLACE FUNCTION llmpulse_gammaincc(a double precision, x double precision)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    fpmin CONSTANT double precision := 1e-300;
    lfront double precision;
    ap double precision;
    s double precision;
    del double precision;
    an double precision;
    bb double precision;
    c double precision;
    d double precision;
    h double precision;
BEGIN
    IF x <= 0.0 THEN RETURN 1.0; END IF;
    lfront := -x + a * ln(x) - llmpulse_lgamma(a);
    IF x < a + 1.0 THEN
        ap := a;
        s := 1.0 / a;
        del := s;
        FOR i IN 1..100000 LOOP
            ap := ap + 1.0;
            del := del * x / ap;
            s := s + del;
            IF abs(del) < abs(s) * 1e-17 THEN
                RETURN 1.0 - s * llmpulse_exp0(lfront);
            END IF;
        END LOOP;
    ELSE
        bb := x + 1.0 - a;
        c := 1.0 / fpmin;
        d := 1.0 / bb;
        h := d;
        FOR i IN 1..100000 LOOP
            an := -i * (i - a);
            bb := bb + 2.0;
            d := an * d + bb;
            IF abs(d) < fpmin THEN d := fpmin; END IF;
            c := bb + an / c;
            IF abs(c) < fpmin THEN c := fpmin; END IF;
            d := 1.0 / d;
            del := d * c;
            h := h * del;
            IF abs(del - 1.0) < 1e-16 THEN
                RETURN llmpulse_exp0(lfront) * h;
            END IF;
        END LOOP;
    END IF;
    RAISE EXCEPTION 'llmpulse_gammaincc(%, %) did not converge', a, x;
END
$$;


-- Standard normal upper tail P(Z > x) = Q(1/2, x^2 / 2) / 2 for x >= 0,
-- accurate in relative terms far into the tail (p-values of 1e-30 stay
-- meaningful).
CREATE OR REPLACE FUNCTION llmpulse_norm_sf(x double precision)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    tail double precision;
BEGIN
    IF abs(x) > 40.0 THEN
        tail := 0.0;  -- P(Z > 40) < 1e-349: below the smallest double
    ELSE
        tail := 0.5 * llmpulse_gammaincc(0.5, 0.5 * x * x);
    END IF;
    RETURN CASE WHEN x >= 0.0 THEN tail ELSE 1.0 - tail END;
END
$$;


CREATE OR REPLACE FUNCTION llmpulse_norm_cdf(x double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN llmpulse_norm_sf(-x);

COMMENT ON FUNCTION llmpulse_norm_cdf(double precision) IS
    'Standard normal CDF P(Z <= x), via the incomplete gamma function (relative error ~1e-15).';


-- Standard normal quantile with upper tail q: P(Z > z) = q. Start from
-- Abramowitz & Stegun 26.2.23 (error < 4.5e-4), then Newton steps on the
-- accurate tail function: each squares the error, three or four reach
-- double precision.
CREATE OR REPLACE FUNCTION llmpulse_norm_isf(q double precision)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    qq double precision;
    t double precision;
    z double precision;
    step double precision;
BEGIN
    IF NOT (q > 0.0 AND q < 1.0) THEN
        RAISE EXCEPTION 'llmpulse_norm_isf: q must be in (0, 1), got %', q;
    END IF;
    qq := CASE WHEN q < 0.5 THEN q ELSE 1.0 - q END;
    t := sqrt(-2.0 * ln(qq));
    z := t - (2.515517 + t * (0.802853 + t * 0.010328))
             / (1.0 + t * (1.432788 + t * (0.189269 + t * 0.001308)));
    FOR i IN 1..60 LOOP
        step := (llmpulse_norm_sf(z) - qq) / (llmpulse_exp0(-0.5 * z * z) * 0.398942280401432677939946059934);
        z := z + step;
        EXIT WHEN abs(step) <= 1e-16 * greatest(1.0, abs(z));
    END LOOP;
    RETURN CASE WHEN q < 0.5 THEN z ELSE -z END;
END
$$;


-- Student t upper tail P(T > t) with df degrees of freedom (df > 0, not
-- necessarily an integer: Welch's df is not):
-- P(|T| > |t|) = I_x(df/2, 1/2) with x = df / (df + t^2).
CREATE OR REPLACE FUNCTION llmpulse_t_sf(t double precision, df double precision)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    tt double precision;
    tail double precision;
BEGIN
    IF NOT df > 0 THEN
        RAISE EXCEPTION 'llmpulse_t_sf: df must be > 0, got %', df;
    END IF;
    IF t = 0.0 THEN RETURN 0.5; END IF;
    IF abs(t) > 1e150 THEN
        tail := 0.0;  -- t^2 would overflow; the tail is below 1e-150
    ELSE
        tt := t * t;
        tail := 0.5 * llmpulse_betainc(0.5 * df, 0.5, df / (df + tt), tt / (df + tt),
                                       -llmpulse_log1p(tt / df), ln(tt) - ln(df + tt));
    END IF;
    RETURN CASE WHEN t > 0.0 THEN tail ELSE 1.0 - tail END;
END
$$;


CREATE OR REPLACE FUNCTION llmpulse_t_cdf(t double precision, df double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN llmpulse_t_sf(-t, df);

COMMENT ON FUNCTION llmpulse_t_cdf(double precision, double precision) IS
    'Student t CDF P(T <= t) for df > 0 degrees of freedom, via the regularized incomplete beta '
    'function (continued fraction); absolute error ~1e-14.';


CREATE OR REPLACE FUNCTION llmpulse_t_pdf(t double precision, df double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN llmpulse_exp0(-0.5 * (df + 1.0) * llmpulse_log1p(t * t / df) - llmpulse_lbeta(0.5 * df, 0.5))
       / sqrt(df);


-- Student t quantile with upper tail q (0 < q < 1). Starts from the
-- Cornish-Fisher expansion around the normal quantile and refines with
-- Newton steps on llmpulse_t_sf, kept inside a bracket: the tail is convex
-- for t > 0, so a step from the left never overshoots, and one from the
-- right that would leave the bracket becomes a bisection.
CREATE OR REPLACE FUNCTION llmpulse_t_isf(q double precision, df double precision)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    qq double precision;
    z double precision;
    t double precision;
    tn double precision;
    s double precision;
    f double precision;
    lo double precision := 0.0;
    hi double precision;  -- NULL: no upper bound yet
BEGIN
    IF NOT (q > 0.0 AND q < 1.0) THEN
        RAISE EXCEPTION 'llmpulse_t_isf: q must be in (0, 1), got %', q;
    END IF;
    IF q = 0.5 THEN RETURN 0.0; END IF;
    qq := CASE WHEN q < 0.5 THEN q ELSE 1.0 - q END;
    z := llmpulse_norm_isf(qq);
    t := z + (z * z * z + z) / (4.0 * df)
           + (5.0 * z ^ 5 + 16.0 * z ^ 3 + 3.0 * z) / (96.0 * df * df)
           + (3.0 * z ^ 7 + 19.0 * z ^ 5 + 17.0 * z ^ 3 - 15.0 * z) / (384.0 * df * df * df);
    IF NOT (t > 0.0 AND t < 1e150) THEN t := z; END IF;
    FOR i IN 1..300 LOOP
        s := llmpulse_t_sf(t, df) - qq;
        EXIT WHEN s = 0.0;
        IF s > 0.0 THEN lo := t; ELSE hi := t; END IF;
        f := llmpulse_t_pdf(t, df);
        tn := CASE WHEN f > 0.0 THEN t + s / f END;
        IF tn IS NULL OR tn <= lo OR tn >= coalesce(hi, 'Infinity'::double precision) THEN
            tn := CASE WHEN hi IS NULL THEN 2.0 * t ELSE 0.5 * (lo + hi) END;
        END IF;
        EXIT WHEN abs(tn - t) <= 4e-16 * abs(tn);
        t := tn;
    END LOOP;
    RETURN CASE WHEN q < 0.5 THEN t ELSE -t END;
END
$$;


-- Two-sided Fisher's exact test of the 2x2 table [[k1, n1 - k1], [k2, n2 - k2]]:
-- the probability, under the hypergeometric distribution of k1 given the
-- margins, of every table no more likely than the observed one (as
-- scipy.stats.fisher_exact; ties within a relative 1e-7, as R's
-- fisher.test). Probabilities come from the ratio of neighbouring terms,
-- walking out from the mode, so no factorial of a large count is formed.
CREATE OR REPLACE FUNCTION llmpulse_fisher_exact_p(k1 bigint, n1 bigint, k2 bigint, n2 bigint)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    big_k double precision := k1 + k2;          -- successes in both rows
    lo bigint := greatest(0, k1 + k2 - n2);
    hi bigint := least(k1 + k2, n1);
    top bigint;                                  -- the mode
    w double precision;
    w_obs double precision;
    total double precision := 1.0;
    weights double precision[];
    x bigint;
    p double precision := 0.0;
BEGIN
    IF lo = hi THEN RETURN 1.0; END IF;
    top := floor((big_k + 1.0) * (n1 + 1.0) / (n1 + n2 + 2.0));
    top := least(greatest(top, lo), hi);
    -- weights[x - lo + 1] relative to the mode's; beyond 1e-290 they are
    -- dropped (they cannot change a sum of 1 or more, and going on would underflow).
    weights := array_fill(0.0::double precision, ARRAY[(hi - lo + 1)::integer]);
    weights[top - lo + 1] := 1.0;
    w := 1.0;
    x := top;
    WHILE x < hi AND w >= 1e-290 LOOP
        w := w * ((n1 - x)::double precision * (big_k - x)) / ((x + 1.0) * (n2 - big_k + x + 1.0));
        x := x + 1;
        weights[x - lo + 1] := w;
        total := total + w;
    END LOOP;
    w := 1.0;
    x := top;
    WHILE x > lo AND w >= 1e-290 LOOP
        w := w * (x::double precision * (n2 - big_k + x)) / ((n1 - x + 1.0) * (big_k - x + 1.0));
        x := x - 1;
        weights[x - lo + 1] := w;
        total := total + w;
    END LOOP;
    w_obs := weights[k1 - lo + 1];
    IF abs(w_obs - 1.0) <= 1e-14 THEN
        RETURN 1.0;  -- the observed table is the most likely one
    END IF;
    FOR i IN 1..(hi - lo + 1) LOOP
        IF weights[i] <= w_obs * (1.0 + 1e-7) THEN
            p := p + weights[i];
        END IF;
    END LOOP;
    RETURN least(p / total, 1.0);
END
$$;


-- ---------------------------------------------------------------- data

CREATE OR REPLACE FUNCTION llmpulse_cohort_metric_check(metric text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    IF metric IS NULL OR metric NOT IN ('success_rate', 'cost', 'rating') THEN
        RAISE EXCEPTION 'unknown cohort metric %', coalesce(quote_literal(metric), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'valid metrics: success_rate, cost, rating';
    END IF;
END
$$;


-- Per-cohort sufficient statistics of one metric over a time range: the
-- input of llmpulse_cohort_compare and of the CLI (processors/cohort_compare.py).
--   success_rate: n = requests of `kind`, total = requests without an error
--   cost:         n = spans with a cost, total = sum of cost_usd, total_sq = sum of cost_usd^2
--   rating:       n = ratings, total = sum of ratings, total_sq = sum of squares
-- Windows written before migration 0003 have a sum of squares of 0 although
-- their sum is not 0; their values cannot enter a variance, so they are left
-- out of n, total and total_sq and counted in `skipped` (a sum of 0 with a
-- sum of squares of 0 is a real window of zeros and is kept).
CREATE OR REPLACE FUNCTION llmpulse_cohort_sums(
    metric          text,
    since           interval         DEFAULT interval '7 days',
    project         text             DEFAULT NULL,
    kind            text             DEFAULT 'llm',
    until           timestamptz      DEFAULT NULL,
    projects        text[]           DEFAULT NULL,
    prompt_versions text[]           DEFAULT NULL
)
RETURNS TABLE (cohort text, n bigint, total double precision, total_sq double precision, skipped bigint)
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
DECLARE
    t_to   timestamptz := coalesce(llmpulse_cohort_sums.until, now());
    t_from timestamptz;
    h_from timestamptz;
    h_to   timestamptz;
BEGIN
    PERFORM llmpulse_cohort_metric_check(llmpulse_cohort_sums.metric);
    IF llmpulse_cohort_sums.since IS NULL OR llmpulse_cohort_sums.since <= interval '0' THEN
        RAISE EXCEPTION 'since must be a positive interval, got %', coalesce(llmpulse_cohort_sums.since::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF llmpulse_cohort_sums.metric = 'success_rate' AND llmpulse_cohort_sums.kind IS NULL THEN
        RAISE EXCEPTION 'kind must not be NULL for success_rate (e.g. ''llm'')'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    t_from := t_to - llmpulse_cohort_sums.since;
    -- Whole UTC hours inside [t_from, t_to); none when the range is shorter.
    h_from := date_trunc('hour', t_from, 'UTC');
    IF h_from < t_from THEN
        h_from := h_from + interval '1 hour';
    END IF;
    h_to := date_trunc('hour', t_to, 'UTC');
    IF h_from >= h_to THEN
        h_from := t_to;
        h_to := t_to;
    END IF;

    RETURN QUERY
    WITH windows AS (
        SELECT w.* FROM metric_windows AS w
        WHERE w.resolution = '1h' AND w.window_start >= h_from AND w.window_start < h_to
        UNION ALL
        SELECT w.* FROM metric_windows AS w
        WHERE w.resolution = '1m' AND w.window_start >= t_from AND w.window_start < h_from
        UNION ALL
        SELECT w.* FROM metric_windows AS w
        WHERE w.resolution = '1m' AND w.window_start >= h_to AND w.window_start < t_to
    ),
    picked AS (
        SELECT
            r.cohort,
            CASE llmpulse_cohort_sums.metric
                WHEN 'success_rate' THEN r.request_count
                WHEN 'cost' THEN r.cost_count
                ELSE r.rating_count
            END AS n,
            -- Counts and cost_usd (numeric) are summed exactly and rounded
            -- to float8 once; rating_sum is float8 already.
            CASE llmpulse_cohort_sums.metric
                WHEN 'success_rate' THEN (r.request_count - r.error_count)::numeric
                WHEN 'cost' THEN r.cost_usd
            END AS total_exact,
            CASE WHEN llmpulse_cohort_sums.metric = 'rating' THEN r.rating_sum END AS total_float,
            CASE llmpulse_cohort_sums.metric
                WHEN 'cost' THEN r.cost_sq_sum
                WHEN 'rating' THEN r.rating_sq_sum
            END AS total_sq
        FROM windows AS r
        WHERE (llmpulse_cohort_sums.metric <> 'success_rate' OR r.kind = llmpulse_cohort_sums.kind)
          AND (llmpulse_cohort_sums.project IS NULL OR r.project = llmpulse_cohort_sums.project)
          AND (llmpulse_cohort_sums.projects IS NULL OR r.project = ANY (llmpulse_cohort_sums.projects))
          AND (llmpulse_cohort_sums.prompt_versions IS NULL
               OR r.prompt_version = ANY (llmpulse_cohort_sums.prompt_versions))
    ),
    judged AS (
        SELECT p.*, coalesce(p.total_sq = 0 AND (p.total_exact <> 0 OR p.total_float <> 0), false) AS lacks_sq
        FROM picked AS p
    )
    SELECT
        j.cohort,
        coalesce(sum(j.n) FILTER (WHERE NOT j.lacks_sq), 0)::bigint,
        coalesce(sum(j.total_exact) FILTER (WHERE NOT j.lacks_sq)::double precision,
                 sum(j.total_float) FILTER (WHERE NOT j.lacks_sq), 0.0),
        CASE WHEN llmpulse_cohort_sums.metric <> 'success_rate'
             THEN coalesce(sum(j.total_sq) FILTER (WHERE NOT j.lacks_sq), 0.0) END,
        coalesce(sum(j.n) FILTER (WHERE j.lacks_sq), 0)::bigint
    FROM judged AS j
    GROUP BY j.cohort
    ORDER BY j.cohort COLLATE "C";
END
$$;

COMMENT ON FUNCTION llmpulse_cohort_sums(text, interval, text, text, timestamptz, text[], text[]) IS
    'Per-cohort n, total, total_sq of success_rate, cost or rating over [until - since, until), '
    'from 1h rows for whole hours and 1m rows for the rest; cohorts ordered by name (C collation).';


-- ---------------------------------------------------------------- comparison

CREATE OR REPLACE FUNCTION llmpulse_cohort_compare(
    metric          text,
    since           interval         DEFAULT interval '7 days',
    project         text             DEFAULT NULL,
    reference       text             DEFAULT NULL,
    alpha           double precision DEFAULT 0.05,
    kind            text             DEFAULT 'llm',
    until           timestamptz      DEFAULT NULL,
    projects        text[]           DEFAULT NULL,
    prompt_versions text[]           DEFAULT NULL
)
RETURNS TABLE (
    cohort       text,
    n            bigint,
    value        double precision,
    ci_low       double precision,
    ci_high      double precision,
    diff         double precision,
    diff_low     double precision,
    diff_high    double precision,
    p_value      double precision,
    p_holm       double precision,
    significant  boolean,
    is_reference boolean,
    test         text,
    note         text
)
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
#variable_conflict use_variable
DECLARE
    eps CONSTANT double precision := 2.220446049250313e-16;  -- sys.float_info.epsilon
    is_rate boolean := llmpulse_cohort_compare.metric = 'success_rate';
    a double precision := llmpulse_cohort_compare.alpha;
    names text[] := '{}';
    ns bigint[] := '{}';
    totals double precision[] := '{}';
    sqs double precision[] := '{}';
    skips bigint[] := '{}';
    -- per-row results, same index as names
    vals double precision[];
    lows double precision[];
    highs double precision[];
    vars double precision[];
    diffs double precision[];
    dlows double precision[];
    dhighs double precision[];
    ps double precision[];
    padj double precision[];
    sigs boolean[];
    tests text[];
    notes text[];
    k integer;
    ref integer;
    ref_ok boolean;
    rec record;
    z double precision;
    tq double precision;
    half double precision;
    ss double precision;
    tol double precision;
    note_parts text[];
    -- comparison scratch
    vn1 double precision;
    vn2 double precision;
    se2 double precision;
    sa double precision;
    sb double precision;
    df double precision;
    se double precision;
    tstat double precision;
    expected_lt_5 boolean;
    succ bigint;
    trials bigint;
    pooled double precision;
    order_idx integer[];
    m integer;
    running double precision;
    rejecting boolean;
    holm boolean;
BEGIN
    PERFORM llmpulse_cohort_metric_check(llmpulse_cohort_compare.metric);
    IF a IS NULL OR NOT (a > 0.0 AND a < 1.0) THEN
        RAISE EXCEPTION 'alpha must be in (0, 1), got %', coalesce(a::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    FOR rec IN
        SELECT * FROM llmpulse_cohort_sums(
            llmpulse_cohort_compare.metric, llmpulse_cohort_compare.since, llmpulse_cohort_compare.project,
            llmpulse_cohort_compare.kind, llmpulse_cohort_compare.until, llmpulse_cohort_compare.projects,
            llmpulse_cohort_compare.prompt_versions)
    LOOP
        names := names || rec.cohort;
        ns := ns || rec.n;
        totals := totals || rec.total;
        sqs := sqs || rec.total_sq;
        skips := skips || rec.skipped;
    END LOOP;
    k := coalesce(array_length(names, 1), 0);
    IF k = 0 THEN
        RETURN;
    END IF;

    -- Reference: the named cohort, else the largest (the first on a tie,
    -- cohorts being ordered by name), as cohort_stats._pick_reference.
    IF llmpulse_cohort_compare.reference IS NOT NULL THEN
        ref := array_position(names, llmpulse_cohort_compare.reference);
        IF ref IS NULL THEN
            RAISE EXCEPTION 'reference cohort % is not among the cohorts with data: %',
                quote_literal(llmpulse_cohort_compare.reference), array_to_string(names, ', ')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSE
        ref := 1;
        FOR i IN 2..k LOOP
            IF ns[i] > ns[ref] THEN ref := i; END IF;
        END LOOP;
    END IF;

    vals := array_fill(NULL::double precision, ARRAY[k]);
    lows := vals; highs := vals; vars := vals; diffs := vals; dlows := vals; dhighs := vals;
    ps := vals; padj := vals;
    sigs := array_fill(NULL::boolean, ARRAY[k]);
    tests := array_fill(NULL::text, ARRAY[k]);
    notes := array_fill(''::text, ARRAY[k]);

    IF is_rate THEN
        -- Wilson score interval per cohort (statsmodels proportion_confint).
        z := llmpulse_norm_isf(a / 2.0);
        FOR i IN 1..k LOOP
            IF ns[i] = 0 THEN
                notes[i] := CASE WHEN i = ref THEN 'reference; ' ELSE '' END || 'insufficient data (0 trials)';
                CONTINUE;
            END IF;
            DECLARE
                q double precision := totals[i] / ns[i];
                nn double precision := ns[i];
                denom double precision := 1.0 + z * z / nn;
                center double precision;
                dist double precision;
            BEGIN
                vals[i] := q;
                center := (q + z * z / (2.0 * nn)) / denom;
                dist := z * sqrt(q * (1.0 - q) / nn + z * z / (4.0 * nn * nn)) / denom;
                lows[i] := least(greatest(center - dist, 0.0), 1.0);
                highs[i] := least(greatest(center + dist, 0.0), 1.0);
            END;
        END LOOP;
        ref_ok := ns[ref] > 0;
        FOR i IN 1..k LOOP
            CONTINUE WHEN ns[i] = 0;
            IF i = ref THEN
                notes[i] := 'reference';
                CONTINUE;
            END IF;
            IF NOT ref_ok THEN
                notes[i] := 'not compared: reference has insufficient data';
                CONTINUE;
            END IF;
            -- Newcombe's hybrid score interval from the two Wilson intervals.
            diffs[i] := vals[i] - vals[ref];
            dlows[i] := diffs[i] - sqrt((vals[i] - lows[i]) ^ 2 + (highs[ref] - vals[ref]) ^ 2);
            dhighs[i] := diffs[i] + sqrt((vals[ref] - lows[ref]) ^ 2 + (highs[i] - vals[i]) ^ 2);
            succ := totals[i]::bigint + totals[ref]::bigint;
            trials := ns[i] + ns[ref];
            -- Smallest expected cell under "no difference" below 5: the
            -- normal approximation is poor, use Fisher's exact test.
            expected_lt_5 := least(ns[i], ns[ref])::numeric * least(succ, trials - succ) < 5 * trials::numeric;
            IF expected_lt_5 THEN
                ps[i] := least(llmpulse_fisher_exact_p(totals[i]::bigint, ns[i], totals[ref]::bigint, ns[ref]), 1.0);
                tests[i] := 'Fisher''s exact test';
                notes[i] := format('Fisher''s exact test: smallest expected count %s < 5',
                                   round((least(ns[i], ns[ref])::double precision
                                          * least(succ, trials - succ) / trials)::numeric, 1));
            ELSE
                pooled := succ::double precision / trials;
                tstat := (vals[i] - vals[ref])
                         / sqrt(pooled * (1.0 - pooled) * (1.0 / ns[i] + 1.0 / ns[ref]));
                ps[i] := least(2.0 * llmpulse_norm_sf(abs(tstat)), 1.0);
                tests[i] := 'two-proportion z-test';
            END IF;
        END LOOP;
    ELSE
        FOR i IN 1..k LOOP
            IF ns[i] < 2 THEN
                vals[i] := CASE WHEN ns[i] > 0 THEN totals[i] / ns[i] END;
                notes[i] := CASE WHEN i = ref THEN 'reference; ' ELSE '' END || 'insufficient data (n < 2)';
                CONTINUE;
            END IF;
            -- Sum of squared deviations; within the rounding of n float
            -- additions it is zero, beyond it the sums are inconsistent
            -- (cohort_stats._sum_sq_dev).
            ss := sqs[i] - totals[i] * totals[i] / ns[i];
            tol := 2.0 * (ns[i] + 2) * eps * sqs[i];
            IF ss < -tol THEN
                RAISE EXCEPTION 'cohort %: inconsistent sums (total_sq < total^2 / n by %)', quote_literal(names[i]), -ss
                    USING ERRCODE = 'data_exception';
            END IF;
            IF ss <= tol THEN ss := 0.0; END IF;
            vals[i] := totals[i] / ns[i];
            vars[i] := ss / (ns[i] - 1);
            half := llmpulse_t_isf(a / 2.0, (ns[i] - 1)::double precision) * sqrt(vars[i] / ns[i]);
            lows[i] := vals[i] - half;
            highs[i] := vals[i] + half;
            IF vars[i] = 0.0 THEN notes[i] := 'zero variance'; END IF;
        END LOOP;
        ref_ok := ns[ref] >= 2;
        FOR i IN 1..k LOOP
            CONTINUE WHEN ns[i] < 2;
            note_parts := CASE WHEN notes[i] = '' THEN '{}'::text[] ELSE ARRAY[notes[i]] END;
            IF i = ref THEN
                notes[i] := array_to_string('reference'::text || note_parts, '; ');
                CONTINUE;
            END IF;
            IF NOT ref_ok THEN
                notes[i] := array_to_string(note_parts || 'not compared: reference has insufficient data'::text, '; ');
                CONTINUE;
            END IF;
            diffs[i] := vals[i] - vals[ref];
            vn1 := vars[i] / ns[i];
            vn2 := vars[ref] / ns[ref];
            se2 := vn1 + vn2;
            IF se2 = 0.0 THEN
                notes[i] := array_to_string(note_parts || 'both cohorts constant: no test possible'::text, '; ');
                CONTINUE;
            END IF;
            -- Welch-Satterthwaite with the variance shares sa + sb = 1 (no
            -- underflow for tiny USD variances); a share below 1e-150 only
            -- adds less than 1e-300 to the denominator.
            sa := vn1 / se2;
            sb := vn2 / se2;
            df := 1.0 / (CASE WHEN sa < 1e-150 THEN 0.0 ELSE sa * sa / (ns[i] - 1) END
                         + CASE WHEN sb < 1e-150 THEN 0.0 ELSE sb * sb / (ns[ref] - 1) END);
            se := sqrt(se2);
            tstat := diffs[i] / se;
            ps[i] := least(2.0 * llmpulse_t_sf(abs(tstat), df), 1.0);
            half := llmpulse_t_isf(a / 2.0, df) * se;
            dlows[i] := diffs[i] - half;
            dhighs[i] := diffs[i] + half;
            tests[i] := 'Welch''s t-test';
            notes[i] := array_to_string(note_parts, '; ');
        END LOOP;
    END IF;

    -- Holm's step-down adjustment over the tested cohorts (statsmodels
    -- multipletests(method="holm")); with one test it is the identity.
    SELECT array_agg(i ORDER BY ps[i], i) INTO order_idx
    FROM generate_series(1, k) AS i WHERE ps[i] IS NOT NULL;
    m := coalesce(array_length(order_idx, 1), 0);
    holm := m >= 2;
    running := 0.0;
    rejecting := true;
    FOR j IN 1..m LOOP
        DECLARE
            i integer := order_idx[j];
        BEGIN
            IF holm THEN
                running := greatest(running, ps[i] * (m - j + 1));
                padj[i] := least(running, 1.0);
                rejecting := rejecting AND NOT (ps[i] > a / (m - j + 1));
                sigs[i] := rejecting;
                tests[i] := tests[i] || ', Holm-adjusted';
            ELSE
                padj[i] := ps[i];
                sigs[i] := ps[i] <= a;
            END IF;
        END;
    END LOOP;

    FOR i IN 1..k LOOP
        IF skips[i] > 0 THEN
            notes[i] := array_to_string(
                array_remove(ARRAY[notes[i],
                    format('%s values without a sum of squares (written before migration 0003) left out', skips[i])],
                    ''), '; ');
        END IF;
        cohort := names[i];
        n := ns[i];
        value := vals[i];
        ci_low := lows[i];
        ci_high := highs[i];
        diff := diffs[i];
        diff_low := dlows[i];
        diff_high := dhighs[i];
        p_value := ps[i];
        p_holm := padj[i];
        significant := sigs[i];
        is_reference := i = ref;
        test := tests[i];
        note := notes[i];
        RETURN NEXT;
    END LOOP;
END
$$;

COMMENT ON FUNCTION llmpulse_cohort_compare(
    text, interval, text, text, double precision, text, timestamptz, text[], text[]) IS
    'Cohorts vs a reference cohort for success_rate, cost or rating over [until - since, until): '
    'value with a 1 - alpha interval, difference with its interval, p-value (Welch''s t-test, '
    'two-proportion z-test or Fisher''s exact test), Holm-adjusted p and the decision. '
    'Same numbers as `llmpulse cohorts compare`.';
