"""Customer lifetime value: BG/NBD (how many more transactions) x Gamma-Gamma (how much each).

The models are the standard ones of Fader, Hardie & Lee (2005) "Counting your customers
the easy way" and Fader & Hardie (2013) "The Gamma-Gamma model of monetary value".

How the work is split between Spark and the driver, so that the driver's cost does not
grow with the number of subscribers:

1. Spark builds one (frequency, recency, T, monetary) summary row per subscriber from the
   transaction days (`rfm_summary`).
2. Spark groups that summary into *distinct* tuples with a count (`bgnbd_tuple_counts`,
   `gamma_gamma_tuple_counts`). Recency and T are whole days, so the tuples are bounded by
   the history length squared times the largest frequency, whatever the subscriber count;
   monetary values are rounded to three significant figures for the same reason.
3. The driver maximises the count-weighted log-likelihood with `scipy.optimize.minimize`.
4. The BG/NBD conditional expectation needs the Gauss hypergeometric function 2F1, whose
   series needs hundreds of terms for frequent buyers; rather than a long column
   expression it is evaluated on the driver with `scipy.special.hyp2f1` for the distinct
   (frequency, recency, T) tuples only and joined back (`with_clv`). Gamma-Gamma's
   conditional mean is a closed form and stays a Spark column expression.

A "transaction" is a day with a recharge or a purchase (money the subscriber chose to
spend); its value is the sum of that day's recharge amounts and purchase prices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StructField, StructType
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

from cvo_spark.core.errors import CvoError, ModelQualityError
from cvo_spark.core.util import require_columns

#: Columns of the per-subscriber summary `rfm_summary` returns.
SUMMARY_COLUMNS = ("subscriber_id", "frequency", "recency_days", "t_days", "monetary_value")


class ClvFitError(CvoError):
    """The CLV likelihood could not be maximised (too few or degenerate customers)."""


@dataclass(frozen=True)
class BgNbdParams:
    """BG/NBD parameters; `alpha` is in the time unit the model was fitted in."""

    r: float
    alpha: float
    a: float
    b: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class GammaGammaParams:
    """Gamma-Gamma parameters: spend per transaction ~ Gamma(p, nu), nu ~ Gamma(q, gamma)."""

    p: float
    q: float
    gamma: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @property
    def population_mean(self) -> float:
        """Mean spend per transaction over the population, p*gamma/(q-1) (q > 1)."""
        return self.p * self.gamma / (self.q - 1.0)


# --------------------------------------------------------------------------- Spark side
def rfm_summary(recharges: DataFrame, purchases: DataFrame, as_of: date) -> DataFrame:
    """One BG/NBD summary row per subscriber with a transaction on or before `as_of`.

    Needs ``recharges(subscriber_id, recharge_ts, amount)`` and
    ``purchases(subscriber_id, purchase_ts, price)``; returns `SUMMARY_COLUMNS`:
    frequency = transaction days after the first one (repeat transactions), recency_days =
    days from the first to the last transaction day, t_days = days from the first
    transaction day to `as_of`, monetary_value = mean value of the repeat transaction
    days (0 when none), the Gamma-Gamma convention. Point in time: events after `as_of`
    are ignored.
    """
    require_columns(recharges, ["subscriber_id", "recharge_ts", "amount"], "rfm_summary(recharges)")
    require_columns(purchases, ["subscriber_id", "purchase_ts", "price"], "rfm_summary(purchases)")
    day_values = (
        recharges.select(
            "subscriber_id", F.to_date("recharge_ts").alias("day"), F.col("amount").alias("value")
        )
        .unionByName(
            purchases.select(
                "subscriber_id", F.to_date("purchase_ts").alias("day"), F.col("price").alias("value")
            )
        )
        .where(F.col("day") <= F.lit(as_of))
        .groupBy("subscriber_id", "day")
        .agg(F.sum(F.coalesce("value", F.lit(0.0))).alias("value"))
    )
    per_sub = day_values.groupBy("subscriber_id").agg(
        F.min("day").alias("first_day"),
        F.max("day").alias("last_day"),
        F.count(F.lit(1)).alias("days"),
        F.sum("value").alias("total"),
        F.min_by("value", "day").alias("first_value"),
    )
    frequency = F.col("days") - 1
    return per_sub.select(
        "subscriber_id",
        frequency.cast("long").alias("frequency"),
        F.datediff("last_day", "first_day").cast("long").alias("recency_days"),
        F.datediff(F.lit(as_of), "first_day").cast("long").alias("t_days"),
        F.when(frequency > 0, (F.col("total") - F.col("first_value")) / frequency)
        .otherwise(F.lit(0.0))
        .cast("double")
        .alias("monetary_value"),
    )


def bgnbd_tuple_counts(summary: DataFrame) -> pd.DataFrame:
    """Distinct (frequency, recency_days, t_days) tuples with their subscriber counts (small)."""
    require_columns(summary, ["frequency", "recency_days", "t_days"], "bgnbd_tuple_counts")
    grouped = summary.groupBy("frequency", "recency_days", "t_days").agg(F.count(F.lit(1)).alias("n"))
    return grouped.orderBy("frequency", "recency_days", "t_days").toPandas()


def _three_significant(col: Column) -> Column:
    """Round a positive amount to 3 significant figures (bounds the distinct values)."""
    scale = F.pow(F.lit(10.0), F.floor(F.log10(col)) - 2)
    return F.round(col / scale) * scale


def gamma_gamma_tuple_counts(summary: DataFrame) -> pd.DataFrame:
    """Distinct (frequency, rounded monetary_value) of repeat customers, with counts (small)."""
    require_columns(summary, ["frequency", "monetary_value"], "gamma_gamma_tuple_counts")
    repeat = summary.where((F.col("frequency") > 0) & (F.col("monetary_value") > 0))
    grouped = repeat.groupBy(
        "frequency", _three_significant(F.col("monetary_value")).alias("monetary_value")
    ).agg(F.count(F.lit(1)).alias("n"))
    return grouped.orderBy("frequency", "monetary_value").toPandas()


def spend_in_window(
    recharges: DataFrame, purchases: DataFrame, start_exclusive: date, end_inclusive: date
) -> DataFrame:
    """``subscriber_id, spend``: recharge amounts plus purchase prices on days in (start, end].

    The same money definition as the transactions of `rfm_summary`, so a CLV prediction
    and its actual outcome are measured alike. Subscribers without spend get no row.
    """
    require_columns(recharges, ["subscriber_id", "recharge_ts", "amount"], "spend_in_window(recharges)")
    require_columns(purchases, ["subscriber_id", "purchase_ts", "price"], "spend_in_window(purchases)")
    rows = recharges.select(
        "subscriber_id", F.to_date("recharge_ts").alias("day"), F.col("amount").alias("v")
    ).unionByName(
        purchases.select("subscriber_id", F.to_date("purchase_ts").alias("day"), F.col("price").alias("v"))
    )
    in_window = (F.col("day") > F.lit(start_exclusive)) & (F.col("day") <= F.lit(end_inclusive))
    return (
        rows.where(in_window).groupBy("subscriber_id").agg(F.sum(F.coalesce("v", F.lit(0.0))).alias("spend"))
    )


# --------------------------------------------------------------------------- fitting
#: Box for the log-parameters (r, alpha, a, b): e^-20..e^20. Where nobody drops out the
#: likelihood keeps rising as a -> 0 and b -> infinity; unbounded, the optimiser once
#: returned a = 4e-74, b = 4e66, a model no double-precision formula can evaluate. At the
#: box edge the dropout is already nil (a / b ~ 1e-17): the same fit, in range.
BGNBD_LOG_BOUNDS = ((-20.0, 20.0),) * 4
#: Box for (p, q, gamma): q > 1 keeps the population's mean spend finite (the expected
#: spend formula divides by p x + q - 1); gamma may be as large as money amounts get.
GAMMA_GAMMA_LOG_BOUNDS = ((-20.0, 20.0), (float(np.log(1.0 + 1e-3)), 20.0), (-20.0, 30.0))


def _minimize_in_box(objective, x0: np.ndarray, bounds) -> np.ndarray | None:
    """Nelder-Mead from `x0`, polished by L-BFGS-B inside `bounds`; the optimum found,
    always inside the box (None when the objective is not finite there)."""
    lo, hi = (np.array(b, dtype=float) for b in zip(*bounds, strict=True))
    res = minimize(
        objective,
        np.clip(x0, lo, hi),
        method="Nelder-Mead",
        options={"xatol": 1e-7, "fatol": 1e-10, "maxiter": 20_000},
    )
    res = minimize(
        objective,
        np.clip(res.x, lo, hi),
        method="L-BFGS-B",
        bounds=list(zip(lo, hi, strict=True)),
        options={"ftol": 1e-13, "gtol": 1e-9},
    )
    return np.clip(res.x, lo, hi) if np.isfinite(res.fun) else None


# --------------------------------------------------------------------------- BG/NBD math
def bgnbd_log_likelihood(params: BgNbdParams, x, t_x, T, weights=None) -> float:
    """Count-weighted BG/NBD log-likelihood (eq. 6 of Fader, Hardie & Lee 2005)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b)
    a3 = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(
            x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x), -np.inf
        )
    return float(np.sum(w * (a1 + a2 + np.logaddexp(a3, a4))))


def fit_bgnbd(x, t_x, T, weights=None, start: BgNbdParams | None = None) -> BgNbdParams:
    """Maximum-likelihood BG/NBD parameters (optimised on the log scale, so all stay > 0).

    Raises `ClvFitError` when there are no repeat buyers (the model is not identified)
    or the optimiser fails.
    """
    x = np.asarray(x, dtype=float)
    if x.size == 0 or not np.any(x > 0):
        raise ClvFitError("BG/NBD fit: no subscriber has a repeat transaction; CLV cannot be estimated")
    start = start or BgNbdParams(1.0, 1.0, 1.0, 1.0)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    scale = float(np.sum(w))

    lo, hi = zip(*BGNBD_LOG_BOUNDS, strict=True)

    def objective(log_p: np.ndarray) -> float:
        p = BgNbdParams(*np.exp(np.clip(log_p, lo, hi)))
        value = -bgnbd_log_likelihood(p, x, t_x, T, w) / scale
        return value if np.isfinite(value) else 1e10

    x0 = np.log([start.r, start.alpha, start.a, start.b])
    log_p = _minimize_in_box(objective, x0, BGNBD_LOG_BOUNDS)
    if log_p is None:
        raise ClvFitError("BG/NBD fit did not converge")
    return BgNbdParams(*map(float, np.exp(log_p)))


def bgnbd_conditional_expected(params: BgNbdParams, t, x, t_x, T) -> np.ndarray:
    """E[transactions in (T, T+t] | x, t_x, T] (eq. 10 of Fader, Hardie & Lee 2005).

    The paper's 2F1(r+x, b+x; c; z) times ((alpha+T)/(alpha+T+t))^(r+x) is rewritten
    with Euler's transformation as (1-w)^(1-a) 2F1(c-r-x, a-1; c; z), where
    c = a+b+x-1, z = t/(alpha+T+t) and w = -t/(alpha+T) = z/(z-1). The argument z
    stays in (0, 1) for every horizon, and no overflowing 2F1 is multiplied by an
    underflowing power. (Pfaff's form 2F1(r+x, a-1; c; w), used before, needs |w| < 1:
    for a 12-month horizon longer than alpha+T, scipy returned NaN once b was large,
    and every subscriber's CLV came out 0.)
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    t = np.asarray(t, dtype=float)
    if abs(a - 1.0) < 1e-9:
        # The closed form has a removable singularity at a = 1; step off it.
        a = 1.0 + 1e-9
    c = a + b + x - 1.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        z = t / (alpha + T + t)
        growth = (alpha + T + t) / (alpha + T)  # 1 - w
        numer = (c / (a - 1.0)) * (1.0 - np.power(growth, 1.0 - a) * hyp2f1(c - r - x, a - 1.0, c, z))
        odds = np.where(
            x > 0, (a / np.maximum(b + x - 1.0, 1e-300)) * np.power((alpha + T) / (alpha + t_x), r + x), 0.0
        )
    alive = 1.0 / (1.0 + odds)
    # An alive subscriber buys at most what a plain NBD (no dropout) predicts:
    # E <= (r + x) t / (alpha + T) (Bernoulli's inequality on the posterior mean).
    nbd = (r + x) * t / (alpha + T)
    # Where dropout is negligible over the horizon, the closed form subtracts two numbers
    # equal to ~1 / c and loses every digit; its limit, the NBD, is exact there.
    negligible = (a / (a + b + x)) * (r + x + 1.0) * np.maximum(t / (alpha + T), 1.0) < 1e-10
    expected = np.where(negligible, alive * nbd, numer * alive)
    if not np.all(np.isfinite(expected)):
        # Never let a numerical failure pass as "this subscriber is worth nothing".
        bad = int(np.size(expected) - np.count_nonzero(np.isfinite(expected)))
        raise ModelQualityError(
            f"BG/NBD conditional expectation is not finite for {bad} (x, t_x, T) tuple(s) "
            f"with r={r:.4g}, alpha={alpha:.4g}, a={a:.4g}, b={b:.4g}, horizon {float(np.max(t)):.4g}"
        )
    outside = (expected < -1e-9) | (expected > nbd * (1 + 1e-6) + 1e-9)
    if np.any(outside):
        # Finite but impossible (cancellation): as wrong as NaN, and far more misleading.
        raise ModelQualityError(
            f"BG/NBD conditional expectation is outside [0, NBD bound] for {int(np.count_nonzero(outside))} "
            f"(x, t_x, T) tuple(s) with r={r:.4g}, alpha={alpha:.4g}, a={a:.4g}, b={b:.4g}"
        )
    return expected


def bgnbd_probability_alive(params: BgNbdParams, x, t_x, T) -> np.ndarray:
    """P(alive at T | x, t_x, T) (eq. 11 of Fader, Hardie & Lee 2005)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        odds = np.where(
            x > 0, (a / np.maximum(b + x - 1.0, 1e-300)) * np.power((alpha + T) / (alpha + t_x), r + x), 0.0
        )
    return 1.0 / (1.0 + np.nan_to_num(odds, posinf=1e300))


# --------------------------------------------------------------------------- Gamma-Gamma math
def gamma_gamma_log_likelihood(params: GammaGammaParams, x, m, weights=None) -> float:
    """Count-weighted Gamma-Gamma log-likelihood of mean spend `m` over `x` transactions."""
    p, q, g = params.p, params.q, params.gamma
    x, m = np.asarray(x, dtype=float), np.asarray(m, dtype=float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    ll = (
        gammaln(p * x + q)
        - gammaln(p * x)
        - gammaln(q)
        + q * np.log(g)
        + (p * x - 1) * np.log(m)
        + p * x * np.log(x)
        - (p * x + q) * np.log(g + x * m)
    )
    return float(np.sum(w * ll))


def fit_gamma_gamma(x, m, weights=None, start: GammaGammaParams | None = None) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma parameters on repeat customers (x > 0, m > 0)."""
    x, m = np.asarray(x, dtype=float), np.asarray(m, dtype=float)
    keep = (x > 0) & (m > 0)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    x, m, w = x[keep], m[keep], w[keep]
    if x.size == 0:
        raise ClvFitError("Gamma-Gamma fit: no repeat customer with a positive spend")
    scale = float(np.sum(w))
    # Method-of-moments-like start: spend scale sets gamma's order of magnitude.
    start = start or GammaGammaParams(1.0, 2.0, float(np.average(m, weights=w)))

    lo, hi = zip(*GAMMA_GAMMA_LOG_BOUNDS, strict=True)

    def objective(log_p: np.ndarray) -> float:
        p = GammaGammaParams(*np.exp(np.clip(log_p, lo, hi)))
        value = -gamma_gamma_log_likelihood(p, x, m, w) / scale
        return value if np.isfinite(value) else 1e10

    x0 = np.log([start.p, max(start.q, 1.5), start.gamma])
    log_p = _minimize_in_box(objective, x0, GAMMA_GAMMA_LOG_BOUNDS)
    if log_p is None:
        raise ClvFitError("Gamma-Gamma fit did not converge")
    return GammaGammaParams(*map(float, np.exp(log_p)))


def gamma_gamma_expected_spend(params: GammaGammaParams, frequency: Column, monetary: Column) -> Column:
    """Spark column: E[spend per transaction | x, m_x] = (gamma + x m_x) p / (p x + q - 1).

    A weighted average of the population mean and the subscriber's own mean, the weight
    on their own mean growing with their number of repeat transactions; subscribers with
    no repeat transaction get the population mean.
    """
    p, q, g = params.p, params.q, params.gamma
    x = frequency.cast("double")
    own = F.coalesce(monetary.cast("double"), F.lit(0.0))
    return (F.lit(g) + x * own) * F.lit(p) / (F.lit(p) * x + F.lit(q - 1.0))


# --------------------------------------------------------------------------- fit and score
@dataclass(frozen=True)
class ClvModel:
    """A fitted BG/NBD + Gamma-Gamma pair and the time unit it was fitted in."""

    bgnbd: BgNbdParams
    gamma_gamma: GammaGammaParams
    time_unit_days: float = 7.0

    def as_dict(self) -> dict[str, float]:
        out = {f"bgnbd_{k}": v for k, v in self.bgnbd.as_dict().items()}
        out.update({f"gg_{k}": v for k, v in self.gamma_gamma.as_dict().items()})
        out["time_unit_days"] = self.time_unit_days
        return out

    @classmethod
    def from_dict(cls, d: dict[str, float]) -> ClvModel:
        return cls(
            BgNbdParams(d["bgnbd_r"], d["bgnbd_alpha"], d["bgnbd_a"], d["bgnbd_b"]),
            GammaGammaParams(d["gg_p"], d["gg_q"], d["gg_gamma"]),
            float(d.get("time_unit_days", 7.0)),
        )


def fit_clv(summary: DataFrame, time_unit_days: float = 7.0) -> ClvModel:
    """Fit BG/NBD and Gamma-Gamma on the distinct-tuple aggregates of `summary`."""
    tuples = bgnbd_tuple_counts(summary)
    unit = float(time_unit_days)
    bgnbd = fit_bgnbd(
        tuples["frequency"], tuples["recency_days"] / unit, tuples["t_days"] / unit, tuples["n"]
    )
    spend = gamma_gamma_tuple_counts(summary)
    gg = fit_gamma_gamma(spend["frequency"], spend["monetary_value"], spend["n"])
    return ClvModel(bgnbd, gg, unit)


def expected_transactions_table(
    model: ClvModel, tuples: pd.DataFrame, horizon_days: float, monthly_discount: float = 0.0
) -> pd.DataFrame:
    """Expected (optionally discounted) transactions over the horizon, per distinct tuple.

    With a discount, the horizon is cut into 30-day months and month m's expected
    transactions are divided by (1 + monthly_discount)^m.
    """
    unit = model.time_unit_days
    args = (
        tuples["frequency"].to_numpy(),
        tuples["recency_days"].to_numpy() / unit,
        tuples["t_days"].to_numpy() / unit,
    )
    if monthly_discount <= 0:
        expected = bgnbd_conditional_expected(model.bgnbd, horizon_days / unit, *args)
    else:
        months = int(np.ceil(horizon_days / 30.0))
        expected = np.zeros(len(tuples))
        previous = np.zeros(len(tuples))
        for m in range(1, months + 1):
            cumulative = bgnbd_conditional_expected(model.bgnbd, min(30.0 * m, horizon_days) / unit, *args)
            expected += (cumulative - previous) / (1.0 + monthly_discount) ** m
            previous = cumulative
    out = tuples[["frequency", "recency_days", "t_days"]].copy()
    out["expected_transactions"] = expected.astype(float)
    return out


def with_clv(
    summary: DataFrame,
    model: ClvModel,
    horizon_days: float,
    out_col: str = "clv",
    monthly_discount: float = 0.0,
) -> DataFrame:
    """Add `expected_transactions` and `out_col` (expected spend over the horizon) to `summary`.

    Needs `SUMMARY_COLUMNS`. The BG/NBD part is computed on the driver for the distinct
    (frequency, recency_days, t_days) tuples and joined back (broadcast: the tuple table
    is small); the Gamma-Gamma part is a column expression. Keeps one row per input row.
    """
    require_columns(summary, SUMMARY_COLUMNS[1:], "with_clv")
    keys = ["frequency", "recency_days", "t_days"]
    tuples = summary.select(*keys).distinct().orderBy(*keys).toPandas()
    table = expected_transactions_table(model, tuples, horizon_days, monthly_discount)
    schema = StructType(
        [
            StructField("frequency", LongType()),
            StructField("recency_days", LongType()),
            StructField("t_days", LongType()),
            StructField("expected_transactions", DoubleType()),
        ]
    )
    table_df = summary.sparkSession.createDataFrame(
        [tuple(int(v) for v in row[:3]) + (float(row[3]),) for row in table.itertuples(index=False)], schema
    )
    joined = summary.join(F.broadcast(table_df), on=keys, how="left")
    spend = gamma_gamma_expected_spend(model.gamma_gamma, F.col("frequency"), F.col("monetary_value"))
    return joined.withColumn(
        "expected_transactions", F.coalesce(F.col("expected_transactions"), F.lit(0.0))
    ).withColumn(out_col, F.col("expected_transactions") * spend)


def clv_for_subscribers(
    recharges: DataFrame,
    purchases: DataFrame,
    subscribers: DataFrame,
    model: ClvModel,
    as_of: date,
    horizon_days: float,
    out_col: str,
    monthly_discount: float = 0.0,
) -> DataFrame:
    """``subscriber_id, <out_col>`` for every row of `subscribers`: expected spend over the horizon.

    The summary is built from spend on or before `as_of`; a subscriber who never spent
    gets 0 (BG/NBD describes customers from their first transaction on).
    """
    require_columns(subscribers, ["subscriber_id"], "clv_for_subscribers")
    ids = subscribers.select("subscriber_id")
    summary = rfm_summary(recharges, purchases, as_of).join(ids, on="subscriber_id", how="inner")
    pred = with_clv(summary, model, horizon_days, out_col, monthly_discount).select("subscriber_id", out_col)
    return ids.join(pred, on="subscriber_id", how="left").fillna({out_col: 0.0})
