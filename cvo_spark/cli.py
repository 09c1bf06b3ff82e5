"""The `cvo` command line (part of the contract in DESIGN.md).

Every command takes ``--conf FILE`` (default conf/local.yaml) and ``--lake DIR``. Any
`CvoError` (bad config, missing table, refused publish, failed honesty guard) becomes
one line on stderr and a non-zero exit; nothing prints a stack trace at a user unless
``CVO_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import date
from pathlib import Path

from cvo_spark.core.config import Config, load_config
from cvo_spark.core.errors import ConfigError, CvoError

log = logging.getLogger(__name__)

DEMO_SUBSCRIBERS = 5_000
DEMO_DAYS = 180
DEMO_SEED = 42


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date (YYYY-MM-DD): {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conf", default=None, help="YAML config (default: conf/local.yaml)")
    p.add_argument("--lake", default=None, help="lake root folder; overrides the config's `lake`")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvo", description="Customer Value Optimizer on Spark + Delta Lake")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write every bronze input table as Delta (synthetic data)")
    _common(g)
    g.add_argument("--out", required=True, help="folder to write the bronze Delta tables into")
    g.add_argument("--subscribers", type=_positive_int, default=DEMO_SUBSCRIBERS)
    g.add_argument("--days", type=_positive_int, default=DEMO_DAYS)
    g.add_argument("--seed", type=int, default=DEMO_SEED)
    g.add_argument("--end-date", type=_iso_date, default=None, help="last day with data (default 2026-06-30)")

    r = sub.add_parser("run", help="run the batch stages for one as-of date")
    _common(r)
    when = r.add_mutually_exclusive_group(required=True)
    when.add_argument("--as-of", type=_iso_date)
    when.add_argument(
        "--plan",
        action="store_true",
        help="print the stage graph (what each stage reads and writes) and exit",
    )
    r.add_argument("--stages", default=None, help="comma-separated subset, run in pipeline order")
    r.add_argument("--override", action="append", default=[], help="publish check to override (recorded)")
    r.add_argument("--report-out", default=None, help="where the report stage writes its HTML")

    d = sub.add_parser("demo", help="generate a small data set and run everything on it")
    _common(d)
    d.add_argument("--subscribers", type=_positive_int, default=DEMO_SUBSCRIBERS)
    d.add_argument("--days", type=_positive_int, default=DEMO_DAYS)
    d.add_argument("--seed", type=int, default=DEMO_SEED)

    s = sub.add_parser("stream", help="the trigger-offer streaming job")
    _common(s)
    s.add_argument("--available-now", action="store_true", help="process what is there, then stop")
    s.add_argument("--as-of", type=_iso_date, default=None, help="offers snapshot to use (default: latest)")

    e = sub.add_parser("explain", help="why a subscriber got these offers, and why not others")
    _common(e)
    e.add_argument("subscriber_id")
    e.add_argument("--as-of", type=_iso_date, required=True)

    ev = sub.add_parser(
        "evaluate-policy", help="off-policy estimate of candidate policies' value from logged decisions"
    )
    _common(ev)
    ev.add_argument("--as-of", type=_iso_date, required=True)
    ev.add_argument(
        "--policy",
        action="append",
        default=[],
        help="policy to judge (repeatable): uplift, response_model, random, tier_rule, no_contact "
        "(default: the config's policy_evaluation.policies)",
    )

    rep = sub.add_parser("report", help="write the HTML report")
    _common(rep)
    rep.add_argument("--as-of", type=_iso_date, required=True)
    rep.add_argument("--out", required=True, help="HTML file to write")
    return parser


def _config(args: argparse.Namespace) -> Config:
    from cvo_spark.core.config import default_config_path

    path = default_config_path() if args.conf is None else Path(args.conf)
    return load_config(path).with_lake(args.lake)


def _spark(config: Config):
    from cvo_spark.core.session import get_spark

    sc = config.spark
    return get_spark(sc.app_name, sc.master, sc.shuffle_partitions, sc.log_level, sc.conf)


def _context(config: Config, as_of: date, overrides=(), options=None):
    from cvo_spark.core.io import TableStore
    from cvo_spark.core.stage import StageContext
    from cvo_spark.pipeline import new_run_id

    spark = _spark(config)
    return StageContext(
        spark=spark,
        config=config,
        store=TableStore(spark, config),
        as_of=as_of,
        run_id=new_run_id(as_of),
        overrides=frozenset(overrides),
        options=dict(options or {}),
    )


def cmd_generate(args: argparse.Namespace) -> int:
    from cvo_spark.synth.generate import DEFAULT_END_DATE, write_bronze

    config = _config(args)
    spark = _spark(config)
    counts = write_bronze(
        spark, args.out, args.subscribers, args.days, args.seed, args.end_date or DEFAULT_END_DATE
    )
    for name, n in counts.items():
        print(f"{name:>16}: {n:,} rows")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from cvo_spark.offers.publish import validate_overrides
    from cvo_spark.pipeline import parse_stages, plan, run_pipeline

    if args.plan:  # nothing runs: no config, no Spark
        print(plan(parse_stages(args.stages)))
        return 0
    config = _config(args)
    stages = parse_stages(args.stages)
    overrides = validate_overrides(args.override)  # before Spark starts: a typo costs nothing
    if "offers" in stages:
        from cvo_spark.core.catalog import load_checked_catalog

        load_checked_catalog(config)  # a bad catalog fails now, not after an hour of train
    ctx = _context(config, args.as_of, overrides, {"report_out": args.report_out})
    from cvo_spark.core.errors import PublishRefused
    from cvo_spark.report.summary import print_summary

    try:
        run_pipeline(ctx, stages)
    except PublishRefused:
        # A refusal is the engine working: show where things stand (the publish status
        # line names the failed check), then the one error line and the non-zero exit.
        try:
            print_summary(ctx)
        except Exception as err:  # noqa: BLE001 - the refusal is the message that matters
            log.warning(
                "summary not printed: %s", str(err).splitlines()[0] if str(err) else type(err).__name__
            )
        raise
    print_summary(ctx)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cvo_spark.pipeline import run_pipeline
    from cvo_spark.report.summary import print_summary
    from cvo_spark.synth.generate import DEFAULT_END_DATE, write_bronze

    config = _config(args)
    ctx = _context(config, DEFAULT_END_DATE, options={"report_out": None})
    bronze = ctx.store.bronze_root()
    if bronze is None:
        raise ConfigError("demo: tables.bronze must be a folder under the lake, not a catalog schema")
    print(
        f"cvo: demo - generating {args.subscribers:,} subscribers x {args.days} days into {bronze}",
        file=sys.stderr,
    )
    write_bronze(ctx.spark, bronze, args.subscribers, args.days, args.seed, DEFAULT_END_DATE)
    run_pipeline(ctx)
    print_summary(ctx)
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    from cvo_spark.stream.job import run_stream

    config = _config(args)
    ctx = _context(config, args.as_of or date.today())
    run_stream(ctx, available_now=args.available_now, offers_as_of=args.as_of)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from cvo_spark.offers.explain import explain

    config = _config(args)
    ctx = _context(config, args.as_of)
    print(explain(ctx, args.subscriber_id))
    return 0


def cmd_evaluate_policy(args: argparse.Namespace) -> int:
    from cvo_spark.pipeline import run_stage

    config = _config(args)
    ctx = _context(config, args.as_of, options={"policies": tuple(args.policy)})
    result = run_stage(ctx, "evaluate-policy")
    print(result.message)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from cvo_spark.pipeline import run_stage

    config = _config(args)
    ctx = _context(config, args.as_of, options={"report_out": args.out})
    run_stage(ctx, "report")
    return 0


COMMANDS = {
    "generate": cmd_generate,
    "run": cmd_run,
    "demo": cmd_demo,
    "stream": cmd_stream,
    "explain": cmd_explain,
    "evaluate-policy": cmd_evaluate_policy,
    "report": cmd_report,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except CvoError as err:
        if os.environ.get("CVO_DEBUG"):
            raise
        # Start on a fresh line: Spark's console progress bar may still hold the current one.
        print(f"\ncvo: error: {err}", file=sys.stderr)
        return err.exit_code
    except Exception as err:
        if os.environ.get("CVO_DEBUG"):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(f"\ncvo: error: {type(err).__name__}: {first} (set CVO_DEBUG=1 for the trace)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
