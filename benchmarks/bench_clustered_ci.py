"""Benchmark (not a test): coverage of the campaign intervals when subscribers are contacted
repeatedly, naive (contacts independent) against clustered by subscriber.

Each seeded replication is one campaign: ``--subscribers`` subscribers, each contacted
1..``--max-contacts`` times (uniform), ``--control-share`` of them drawn into control *per
subscriber*; subscriber i accepts each of its contacts with its own probability
p_i = 0.9 * Beta(a, b) (mean 0.10; the same subscriber answers alike, which is what makes
its contacts one unit), plus the planted ``--uplift`` when treated; an acceptance pays the
subscriber's price level (uniform 10k..30k) times a per-contact factor uniform 0.8..1.2,
mean 20,000. Truth: uplift = the planted one, incremental revenue = uplift * 20,000 * the
treatment contacts.

The intervals are computed by the functions of `cvo_spark.measure.intervals`, the same
ones `campaigns.with_uplift` turns into Spark expressions; the per-subscriber moments
(``np.var`` / ``np.cov`` with ddof=1) mirror ``var_samp`` / ``covar_samp`` of
`campaigns.aggregate_clustered_groups`, and the naive ones the contact-level
`campaigns.aggregate_groups`. Pure NumPy: 1,000 replications take seconds.

    .venv/bin/python benchmarks/bench_clustered_ci.py              # 1,000 replications
    .venv/bin/python benchmarks/bench_clustered_ci.py --replications 300 --seed 7
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from statistics import NormalDist

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cvo_spark.measure.intervals import (
    clustered_ratio_variance,
    newcombe_bounds,
    normal_bounds,
    wald_variance,
)

OUT = Path(__file__).resolve().parent / "out" / "clustered_ci.json"
PRICE_LOW, PRICE_HIGH = 10_000.0, 30_000.0
PRICE_MEAN = (PRICE_LOW + PRICE_HIGH) / 2.0  # the per-contact factor has mean 1
#: Accept probability p_i = P_SCALE * Beta(BETA_A, BETA_B): mean 0.10, at most 0.9, so the
#: planted uplift never pushes it past 1 and the truth is exactly the planted uplift.
BETA_A, BETA_B, P_SCALE = 1.0, 8.0, 0.9

INTERVALS = ("uplift_wald", "uplift_newcombe", "uplift_clustered", "revenue_naive", "revenue_clustered")


def simulate_campaign(
    rng: np.random.Generator, subscribers: int, control_share: float, uplift: float, max_contacts: int
):
    """One campaign: per-subscriber arrays (is_control, n_i, k_i, r_i) and per-contact ones."""
    is_control = rng.random(subscribers) < control_share
    n_i = rng.integers(1, max_contacts + 1, subscribers)
    p_i = P_SCALE * rng.beta(BETA_A, BETA_B, subscribers) + np.where(is_control, 0.0, uplift)
    price = rng.uniform(PRICE_LOW, PRICE_HIGH, subscribers)
    owner = np.repeat(np.arange(subscribers), n_i)  # subscriber of each contact
    accepted = rng.random(owner.size) < p_i[owner]
    revenue = np.where(accepted, price[owner] * rng.uniform(0.8, 1.2, owner.size), 0.0)
    k_i = np.bincount(owner, weights=accepted, minlength=subscribers)
    r_i = np.bincount(owner, weights=revenue, minlength=subscribers)
    return is_control, n_i.astype(float), k_i, r_i, is_control[owner], accepted, revenue


def group_figures(n_i, k_i, r_i, contact_revenue) -> dict[str, float]:
    """What the Spark aggregations give for one group: totals, clustered and naive variances."""
    m, total = float(n_i.size), float(n_i.sum())
    rate, rpc = k_i.sum() / total, r_i.sum() / total
    s_nn = np.var(n_i, ddof=1)
    s_kk, s_kn = np.var(k_i, ddof=1), np.cov(k_i, n_i, ddof=1)[0, 1]
    s_rr, s_rn = np.var(r_i, ddof=1), np.cov(r_i, n_i, ddof=1)[0, 1]
    return {
        "n": total,
        "k": float(k_i.sum()),
        "rpc": rpc,
        # Clipped at 0 as `campaigns._non_negative` does.
        "rate_var": max(clustered_ratio_variance(m, total, s_kk, s_kn, s_nn, rate), 0.0),
        "rpc_var": max(clustered_ratio_variance(m, total, s_rr, s_rn, s_nn, rpc), 0.0),
        # Contact-level revenue variance (var_samp over contacts) / n, as aggregate_groups.
        "rpc_var_naive": np.var(contact_revenue, ddof=1) / total,
    }


def replicate(
    rng, subscribers, control_share, uplift, max_contacts, z
) -> dict[str, tuple[float, float, float, float]]:
    """(low, high, truth, estimate) of each interval in `INTERVALS` for one simulated campaign."""
    is_control, n_i, k_i, r_i, contact_control, _, revenue = simulate_campaign(
        rng, subscribers, control_share, uplift, max_contacts
    )
    t = group_figures(n_i[~is_control], k_i[~is_control], r_i[~is_control], revenue[~contact_control])
    c = group_figures(n_i[is_control], k_i[is_control], r_i[is_control], revenue[contact_control])
    diff = t["k"] / t["n"] - c["k"] / c["n"]
    incremental = (t["rpc"] - c["rpc"]) * t["n"]
    revenue_truth = uplift * PRICE_MEAN * t["n"]
    naive_var = wald_variance(t["k"], t["n"]) + wald_variance(c["k"], c["n"])
    out = {
        "uplift_wald": (*normal_bounds(diff, naive_var, z), uplift, diff),
        "uplift_newcombe": (*newcombe_bounds(t["k"], t["n"], c["k"], c["n"], z), uplift, diff),
        "uplift_clustered": (*normal_bounds(diff, t["rate_var"] + c["rate_var"], z), uplift, diff),
    }
    for name, var in (
        ("revenue_naive", t["rpc_var_naive"] + c["rpc_var_naive"]),
        ("revenue_clustered", t["rpc_var"] + c["rpc_var"]),
    ):
        # n_t * (diff +/- z sqrt(V)), as campaigns.with_uplift
        low, high = normal_bounds(incremental, var * t["n"] ** 2, z)
        out[name] = (low, high, revenue_truth, incremental)
    return out


def run(
    replications: int = 1_000,
    seed: int = 2026,
    subscribers: int = 2_000,
    control_share: float = 0.10,
    uplift: float = 0.05,
    max_contacts: int = 8,
    confidence: float = 0.95,
) -> dict:
    """Coverage and mean width of every interval over seeded replications (a JSON-able dict)."""
    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)
    started = time.perf_counter()
    results = [
        replicate(np.random.default_rng([seed, r]), subscribers, control_share, uplift, max_contacts, z)
        for r in range(replications)
    ]
    summary = {}
    for name in INTERVALS:
        low, high, truth, estimate = (np.array([res[name][i] for res in results]) for i in range(4))
        covered = (low <= truth) & (truth <= high)
        summary[name] = {
            "coverage": float(covered.mean()),
            "mean_width": float((high - low).mean()),
            # Calibration of the width: an honest interval's implied standard error matches
            # the spread of the estimate over replications (ratio near 1).
            "implied_se_over_sd": float(((high - low) / (2 * z)).mean() / np.std(estimate - truth, ddof=1)),
        }
    return {
        "replications": replications,
        "seed": seed,
        "design": {
            "subscribers": subscribers,
            "control_share": control_share,
            "contacts_per_subscriber": f"uniform 1..{max_contacts}",
            "accept_probability": f"{P_SCALE} * Beta({BETA_A}, {BETA_B}) per subscriber (mean 0.10)",
            "planted_uplift": uplift,
            "revenue_per_acceptance": "subscriber price uniform 10k..30k x contact factor uniform 0.8..1.2",
        },
        "confidence": confidence,
        "intervals": summary,
        "seconds": round(time.perf_counter() - started, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replications", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--subscribers", type=int, default=2_000)
    parser.add_argument("--control-share", type=float, default=0.10)
    parser.add_argument("--uplift", type=float, default=0.05)
    parser.add_argument("--max-contacts", type=int, default=8)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    result = run(
        args.replications, args.seed, args.subscribers, args.control_share, args.uplift, args.max_contacts
    )
    print(f"{result['replications']} replications, seed {result['seed']}, {result['seconds']} s")
    print(f"{'interval':<20} {'coverage':>9} {'mean width':>14} {'implied se / sd':>16}")
    for name, s in result["intervals"].items():
        print(f"{name:<20} {s['coverage']:>9.1%} {s['mean_width']:>14,.4g} {s['implied_se_over_sd']:>16.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
