"""Stage `report`: write the self-contained HTML report for one as-of date.

Output: ``ctx.options["report_out"]`` when given (``cvo report --out``, ``cvo run
--report-out``), else ``<lake>/reports/report_<as_of>.html``. A lake on object storage
has no local folder to write to: ``dbfs:/x`` is written through the ``/dbfs/x`` mount,
any other scheme falls back to ``reports/`` under the working directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cvo_spark.core.io import local_path_under
from cvo_spark.core.stage import StageContext, StageResult
from cvo_spark.report.data import READS as READS
from cvo_spark.report.data import Unavailable, collect_report
from cvo_spark.report.html import render_report

log = logging.getLogger(__name__)


def default_report_path(lake: str, as_of) -> Path:
    """Where the report goes when no file is given (see the module docstring)."""
    name = f"report_{as_of.isoformat()}.html"
    return local_path_under(lake, "reports", name) or Path("reports") / name


def run(ctx: StageContext) -> StageResult:
    out = ctx.options.get("report_out")
    path = Path(out) if out else default_report_path(ctx.store.lake_root, ctx.as_of)
    data = collect_report(ctx.store, ctx.as_of)
    missing = sorted({v.table for v in data.values() if isinstance(v, Unavailable)})
    html = render_report(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    log.info("report written to %s", path)
    return StageResult(
        row_counts={"report_bytes": len(html.encode("utf-8")), "tables_missing": len(missing)},
        checks={"missing_tables": ",".join(missing) or "none"},
        message=f"report written to {path.absolute()}",
    )
