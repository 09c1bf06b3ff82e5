"""Interval formulas shared by the Spark measurement and its NumPy simulation.

Every function here uses only ``+ - * /`` and ``**`` on its arguments, so one definition
serves both: given Spark Columns it builds a Column expression (`campaigns.with_uplift`),
given NumPy arrays or floats it computes numbers (`benchmarks/bench_clustered_ci.py`). The
simulation therefore checks the very formulas the job runs, not a copy of them.

Notation per group (treatment t, control c): n contacts, k acceptances, p = k / n.

Clustered by subscriber (the unit of assignment): per subscriber i of a group with m
subscribers, n_i contacts, k_i acceptances, r_i revenue. The accept rate is the ratio
estimator p = sum k_i / sum n_i; its linearisation (delta-method) variance is

    Var(p) = sum (k_i - p n_i)^2 / (sum n_i)^2 * m / (m - 1)

and the same with r_i for revenue per contact. Because sum (k_i - p n_i) = 0, the sum of
squares equals (m - 1) (s_kk - 2 p s_kn + p^2 s_nn) with the per-subscriber sample
(co)variances s, so Var(p) = m (s_kk - 2 p s_kn + p^2 s_nn) / (sum n_i)^2: Spark's
``var_samp`` / ``covar_samp`` give those in one numerically stable aggregation, with no
second pass over the subscribers to form the residuals.
"""

from __future__ import annotations


def wilson_bounds(k, n, z):
    """Wilson score interval (low, high) of a proportion k / n at normal quantile `z`."""
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)) ** 0.5 / denom
    return centre - half, centre + half


def newcombe_bounds(k_t, n_t, k_c, n_c, z):
    """Newcombe's hybrid score interval (method 10, 1998) of p_t - p_c; contacts independent."""
    p_t, p_c = k_t / n_t, k_c / n_c
    l_t, u_t = wilson_bounds(k_t, n_t, z)
    l_c, u_c = wilson_bounds(k_c, n_c, z)
    diff = p_t - p_c
    low = diff - ((p_t - l_t) ** 2 + (u_c - p_c) ** 2) ** 0.5
    high = diff + ((u_t - p_t) ** 2 + (p_c - l_c) ** 2) ** 0.5
    return low, high


def wald_variance(k, n):
    """Binomial variance p (1 - p) / n of a proportion, contacts taken as independent."""
    p = k / n
    return p * (1.0 - p) / n


def clustered_ratio_variance(m, total, var_num, covar, var_den, ratio):
    """Delta-method variance of the ratio estimator sum(num_i) / sum(den_i) over m clusters.

    Parameters are per group: `m` clusters (subscribers), `total` = sum den_i (contacts),
    `var_num` = sample variance of num_i (acceptances or revenue per subscriber), `covar` =
    sample covariance of num_i and den_i, `var_den` = sample variance of den_i, `ratio` =
    sum num_i / sum den_i. Returns m (s_yy - 2 R s_yx + R^2 s_xx) / total^2, which equals
    sum (num_i - R den_i)^2 / total^2 * m / (m - 1) (module docstring). In exact arithmetic
    it is >= 0; rounding can leave a tiny negative when every residual is zero, so callers
    clip at 0 (``F.greatest`` in Spark, ``np.maximum`` in NumPy) before a square root.
    """
    return m * (var_num - 2.0 * ratio * covar + ratio * ratio * var_den) / (total * total)


def normal_bounds(estimate, variance, z):
    """The normal-approximation interval estimate +/- z * sqrt(variance), as (low, high)."""
    half = z * variance**0.5
    return estimate - half, estimate + half
