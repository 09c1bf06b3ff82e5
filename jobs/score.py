"""spark-submit entry point: stage `score` alone (args: --conf FILE [--lake DIR] --as-of D).

Same as `jobs/run_pipeline.py --stages score`; see it for the arguments.
"""

from __future__ import annotations

import sys

from cvo_spark.cli import main as cvo_main

if __name__ == "__main__":
    sys.exit(cvo_main(["run", "--stages", "score", *sys.argv[1:]]))
