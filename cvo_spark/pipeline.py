"""Stage orchestration: run the batch stages in order and audit each in `runs`.

A stage is a module (`STAGE_MODULES`) with ``run(ctx: StageContext) -> StageResult``.
Stages do IO through `ctx.store`; their business rules live in the transform modules.
Every stage run, successful or not, appends one row to the gold `runs` table with its
row counts and check results, so a refused publish is as visible as a good one.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
import uuid
from datetime import UTC, date, datetime

from cvo_spark.core.errors import ConfigError, CvoError, PublishRefused
from cvo_spark.core.io import unreadable_table_error
from cvo_spark.core.schemas import OUTPUT_SCHEMAS
from cvo_spark.core.stage import StageContext, StageResult

log = logging.getLogger(__name__)

#: Batch stages, in the order `cvo run` executes them.
STAGES: tuple[str, ...] = ("ingest", "features", "segments", "train", "score", "offers", "measure", "report")
#: The module holding each stage's ``run(ctx)``: one package per stage, `models` holds two.
STAGE_MODULES: dict[str, str] = {
    "ingest": "cvo_spark.ingest.stage",
    "features": "cvo_spark.features.stage",
    "segments": "cvo_spark.segments.stage",
    "train": "cvo_spark.models.train_stage",
    "score": "cvo_spark.models.score_stage",
    "offers": "cvo_spark.offers.stage",
    "measure": "cvo_spark.measure.stage",
    "report": "cvo_spark.report.stage",
    # On demand only (`cvo evaluate-policy`), never part of `cvo run`.
    "evaluate-policy": "cvo_spark.policy.stage",
}


def new_run_id(as_of: date) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{as_of.isoformat()}-{stamp}-{uuid.uuid4().hex[:6]}"


def parse_stages(text: str | None) -> tuple[str, ...]:
    """`a,b,c` into a validated tuple kept in pipeline order; unknown names are an error."""
    if not text:
        return STAGES
    wanted = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise ConfigError(f"--stages: unknown stage {unknown[0]!r}; known: {', '.join(STAGES)}")
    return tuple(s for s in STAGES if s in wanted)


def record_run(ctx: StageContext, stage: str, status: str, result: StageResult, started: datetime) -> None:
    """Append one audit row to gold `runs` (a log: appends only, keyed by run_id + stage)."""
    row = (
        ctx.run_id,
        stage,
        ctx.as_of,
        status,
        {k: int(v) for k, v in result.row_counts.items()},
        {k: str(v) for k, v in result.checks.items()},
        result.message[:2000],
        started,
        datetime.now(UTC).replace(tzinfo=None),
    )
    df = ctx.spark.createDataFrame([row], OUTPUT_SCHEMAS["runs"])
    ctx.store.append(df, "gold", "runs")


def run_stage(ctx: StageContext, stage: str) -> StageResult:
    """Run one stage and audit it; errors are recorded, then re-raised."""
    module = importlib.import_module(STAGE_MODULES[stage])
    started = datetime.now(UTC).replace(tzinfo=None)
    t0 = time.monotonic()
    print(f"cvo: [{stage}] as of {ctx.as_of} ...", file=sys.stderr, flush=True)
    try:
        result = module.run(ctx)
    except PublishRefused as err:
        record_run(
            ctx, stage, "refused", StageResult(checks=getattr(err, "checks", {}), message=str(err)), started
        )
        raise
    except CvoError as err:
        record_run(ctx, stage, "failed", StageResult(message=str(err)), started)
        raise
    except Exception as err:
        unreadable = unreadable_table_error(err, f"stage {stage}")
        if unreadable is not None:  # a corrupt file of any table: one line naming it
            record_run(ctx, stage, "failed", StageResult(message=str(unreadable)), started)
            raise unreadable from None
        record_run(ctx, stage, "failed", StageResult(message=f"{type(err).__name__}: {err}"), started)
        raise
    record_run(ctx, stage, "succeeded", result, started)
    counts = ", ".join(f"{k}={v:,}" for k, v in result.row_counts.items())
    print(f"cvo: [{stage}] done in {time.monotonic() - t0:.1f}s {counts}", file=sys.stderr, flush=True)
    return result


def run_pipeline(ctx: StageContext, stages: tuple[str, ...] = STAGES) -> dict[str, StageResult]:
    """Run `stages` in pipeline order; the first failure stops the run."""
    return {stage: run_stage(ctx, stage) for stage in stages}
