"""spark-submit entry point: the batch pipeline (or a subset of its stages) for one as-of date.

    spark-submit ... jobs/run_pipeline.py --conf conf/cluster.yaml --as-of 2026-06-30 [--stages a,b]

Session -> config -> `cvo_spark.pipeline.run_pipeline`, through the same code path as
`cvo run` (`cvo_spark.cli`), so a job and the CLI can never disagree. No business logic
here. Under spark-submit the master and the Delta package come from the command line
(`scripts/submit.sh`); `cvo_spark.core.session` does not override them.
"""

from __future__ import annotations

import argparse
import sys

from cvo_spark.cli import main as cvo_main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="run_pipeline.py", description=__doc__.splitlines()[0])
    p.add_argument("--conf", default="conf/local.yaml", help="YAML config (default: %(default)s)")
    p.add_argument("--lake", default=None, help="lake root; overrides the config's `lake`")
    p.add_argument("--as-of", required=True, help="ISO date")
    p.add_argument("--stages", default=None, help="comma-separated subset (default: all, in pipeline order)")
    p.add_argument("--report-out", default=None, help="where the report stage writes its HTML")
    return p.parse_args(argv)


def to_cli(args: argparse.Namespace) -> list[str]:
    """The equivalent `cvo run` argument list."""
    argv = ["run", "--conf", args.conf, "--as-of", args.as_of]
    for flag, value in (("--lake", args.lake), ("--stages", args.stages), ("--report-out", args.report_out)):
        if value:
            argv += [flag, value]
    return argv


if __name__ == "__main__":
    sys.exit(cvo_main(to_cli(parse_args(sys.argv[1:]))))
