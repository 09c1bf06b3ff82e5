"""spark-submit entry point: stage `report` alone (args: --conf FILE [--lake DIR] --as-of D).

Same as `jobs/run_pipeline.py --stages report`; see it for the arguments.
"""

from __future__ import annotations

import sys

from cvo_spark.cli import main as cvo_main

if __name__ == "__main__":
    sys.exit(cvo_main(["run", "--stages", "report", *sys.argv[1:]]))
