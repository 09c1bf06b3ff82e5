"""Benchmark (not a test): do the off-policy estimates cover the planted truth?

On the generator's lake (ingest..train, so the uplift model, the reward model q̂, is trained
on contacts before the evaluation window), the decision points are the train stage's
out-of-time evaluation contacts and the actions every (offer, channel) the catalog allows.
The generator's planted response model gives each (decision point, action) its true accept
probability with and without contact, hence each policy's true incremental margin per
decision point (`benchmarks/ope_simulation.py`: a judging tool outside the package, never
imported by engine code).

Then ``--replications`` times (seeded): a known random logging policy (an action uniform
among the point's allowed actions, held back as control with probability
``--control-share``) is drawn at every decision point, and its outcome from the planted
probability of the drawn arm; `cvo_spark.policy.ope.evaluate_policies` judges the candidate
policies (`cvo_spark.policy.policies`: uplift, response_model, tier_rule, random) on that
log with ``--bootstrap`` Poisson resamples of subscribers, with the control arm per action
as logged and/or pooled across the offer's channels (``--pool``). Reported per policy and
estimator: coverage of the truth by the 95% interval, bias, RMSE, mean interval width, mean
effective sample size (all rows and the control arm alone). The same policies are also
judged on the generator's own log (its logging policy, with the logged propensities).

The README's figures (5,828 decision points of the 20,000-subscriber lake):

    nice -n 10 .venv/bin/python benchmarks/bench_ope.py --keep-lake /work/bench_lake \
        --replications 200 --bootstrap 40 --max-points 6000 --pool both

``--max-points 0`` takes every evaluation contact (29,643 on that lake: hours, not minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_uplift import build_lake  # noqa: E402
from ope_simulation import (  # noqa: E402
    coverage_summary,
    judged_actions,
    simulated_logs,
    true_values,
)

from cvo_spark.core.config import load_config  # noqa: E402
from cvo_spark.core.io import TableStore  # noqa: E402
from cvo_spark.core.session import get_spark  # noqa: E402
from cvo_spark.core.stage import StageContext  # noqa: E402
from cvo_spark.policy.ope import ESTIMATORS, evaluate_policies  # noqa: E402
from cvo_spark.policy.policies import candidate_policies  # noqa: E402
from cvo_spark.policy.stage import logged_rows  # noqa: E402
from cvo_spark.synth.generate import DEFAULT_END_DATE  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
POLICIES = ("uplift", "response_model", "tier_rule", "random")
#: --pool: which control arms to measure (per action as logged, pooled across channels, both).
POOL_MODES = {"off": (False,), "on": (True,), "both": (False, True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subscribers", type=int, default=20_000, help="lake size when building one")
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument(
        "--keep-lake", default="", help="build the lake here and keep it; reuse it when it exists"
    )
    ap.add_argument("--replications", type=int, default=200)
    ap.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamples per replication")
    ap.add_argument("--max-points", type=int, default=4000, help="decision points (a seeded subset)")
    ap.add_argument("--control-share", type=float, default=0.1)
    ap.add_argument("--policies", default=",".join(POLICIES), help="comma-separated candidate policies")
    ap.add_argument(
        "--pool",
        choices=sorted(POOL_MODES),
        default="both",
        help="control arm: per action as logged (off), pooled across the offer's channels (on), or both",
    )
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "ope.json"))
    args = ap.parse_args()
    load_start = list(os.getloadavg())  # the machine is shared: the figures' seconds depend on it
    spark = get_spark(
        app_name="bench_ope",
        master="local[*]",
        shuffle_partitions=8,
        log_level="ERROR",
        extra_conf={"spark.driver.memory": "8g", "spark.ui.enabled": "false"},
        show_progress=False,
    )
    root = Path(args.keep_lake) if args.keep_lake else Path(tempfile.mkdtemp(prefix="bench_ope_"))
    if (root / "lake" / "gold" / "uplift_training_frames").exists():
        config = load_config(root / "conf.yaml")
        ctx = StageContext(spark, config, TableStore(spark, config), DEFAULT_END_DATE, "bench")
    else:
        ctx = build_lake(spark, root, args.subscribers, args.days, args.seed)
    t0 = time.perf_counter()
    points, judged = judged_actions(ctx, root / "lake" / "bronze", args.max_points)
    n_points = points.count()
    subscribers = points.select("subscriber_id").distinct().count()
    names = tuple(args.policies.split(","))
    policy = candidate_policies(judged, names, ctx.config.offers.allocation.min_net_value).persist()
    truth = true_values(policy, judged, n_points)
    print(f"{n_points:,} decision points, {subscribers:,} subscribers; truth per point: {truth}", flush=True)
    pools = POOL_MODES[args.pool]

    # 1. The generator's own log, as `cvo evaluate-policy` judges it.
    own_log: dict = {}
    for pool in pools:
        own = evaluate_policies(
            logged_rows(points, judged), policy, names, replicates=args.bootstrap, seed=args.seed,
            pool_control_channels=pool,
        )  # fmt: skip
        own_log["pooled" if pool else "per_action"] = {
            r.policy: {
                "truth": truth.get(r.policy, 0.0),
                **{e: [r.estimates[e], *r.intervals[e]] for e in ESTIMATORS},
                "effective_sample_size": r.effective_sample_size,
                "control_effective_sample_size": r.control_effective_sample_size,
                "matched": r.matched,
                "matched_control": r.matched_control,
                "unsupported_share": r.unsupported_mass,
            }
            for r in own
        }
    # 2. Replications of a known random logging policy, each control arm on the same logs.
    logs = simulated_logs(judged, args.replications, args.seed, args.control_share)
    simulated: dict = {}
    seconds: dict = {}
    for pool in pools:
        key = "pooled" if pool else "per_action"
        t1 = time.perf_counter()
        results = evaluate_policies(
            logs, policy, names, replicates=args.bootstrap, seed=args.seed, pool_control_channels=pool
        )
        seconds[key] = time.perf_counter() - t1
        simulated[key] = summary = coverage_summary(results, truth, names)
        for name in names:
            figures = summary[name]
            print(
                f"[{key}] {name:<15} truth {figures['truth']:9.2f}  "
                + "  ".join(
                    f"{e.upper()} cover {figures[e]['coverage']:.1%} bias {figures[e]['bias']:+.2f} "
                    f"rmse {figures[e]['rmse']:.2f}"
                    for e in ("dr", "ips", "snips")
                )
                + f"  ESS {figures['mean_effective_sample_size']:,.0f}"
                f"  control ESS {figures['mean_control_effective_sample_size']:,.0f}",
                flush=True,
            )
    report = {
        "date": date.today().isoformat(),
        "machine": "2 cores, 24 GiB, local[*]",
        "load_average_at_start": load_start,
        "load_average_at_end": list(os.getloadavg()),
        "decision_points": n_points,
        "subscribers": subscribers,
        "replications": args.replications,
        "bootstrap": args.bootstrap,
        "control_share": args.control_share,
        "control_arms": [("pooled" if p else "per_action") for p in pools],
        "truth_per_decision_point": truth,
        "own_log": own_log,
        "simulated": simulated,
        "seconds": {"total": time.perf_counter() - t0, "replications": seconds},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
