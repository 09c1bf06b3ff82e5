"""Stage orchestration: run the batch stages in order and audit each in `runs`.

A stage is a module (`STAGE_MODULES`) with ``run(ctx: StageContext) -> StageResult``.
Stages do IO through `ctx.store`; their business rules live in the transform modules.
Every stage run, successful or not, appends one row to the gold `runs` table with its
row counts and check results, so a refused publish is as visible as a good one.

What a stage touches is declared, not only done: its module's ``READS`` (tables it reads
in the same run, produced by earlier stages or by the sources) and optional
``READS_PRIOR`` (tables of earlier runs it reads whatever their producer's place in the
order, e.g. ingest checking channel responses against yesterday's decisions); what it
writes is what the table registry (`cvo_spark.core.tables`) says it produces. A stage may
also read back what it writes. `check_order` fails when a stage of `STAGES` reads a table
a later stage produces; `cvo run --plan` prints the graph; each run records what the
stage actually read and wrote (`StageResult.touched`), and `undeclared` names anything
outside the declaration.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime

from cvo_spark.core.errors import ConfigError, CvoError, PublishRefused
from cvo_spark.core.io import Touched, unreadable_table_error
from cvo_spark.core.schemas import OUTPUT_SCHEMAS
from cvo_spark.core.stage import StageContext, StageResult
from cvo_spark.core.tables import PIPELINE, TABLES, written_by

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


@dataclass(frozen=True)
class StageIO:
    """What a stage declares it touches (registered table names, ``bronze.<name>`` inputs)."""

    stage: str
    reads: tuple[str, ...]
    reads_prior: tuple[str, ...]
    writes: tuple[str, ...]


def stage_io(stage: str) -> StageIO:
    """The declaration of `stage`: its module's READS / READS_PRIOR, the registry's writes."""
    module = importlib.import_module(STAGE_MODULES[stage])
    return StageIO(
        stage,
        tuple(module.READS),
        tuple(getattr(module, "READS_PRIOR", ())),
        written_by(stage),
    )


def check_order(stages: tuple[str, ...] = STAGES) -> None:
    """Fail when a stage reads, in the same run, a table that only a later stage produces,
    or declares a table the registry does not know.

    Producers outside `stages` (the sources, `cvo stream`, `cvo evaluate-policy`) impose no
    order: their tables are whatever they last wrote.
    """
    position = {s: i for i, s in enumerate(stages)}
    for stage in stages:
        io = stage_io(stage)
        for name in (*io.reads, *io.reads_prior):
            if not name.startswith("bronze.") and name not in TABLES:
                raise ConfigError(f"stage {stage}: declares unknown table {name!r}")
        for name in io.reads:
            if name.startswith("bronze."):
                continue
            later = [p for p in TABLES[name].producers if position.get(p, -1) > position[stage]]
            if later:
                raise ConfigError(
                    f"stage {stage} reads {name}, which stage {later[0]} writes later in the run: "
                    f"move {stage} after {later[0]}, or declare the read in READS_PRIOR"
                )


def plan(stages: tuple[str, ...] = STAGES) -> str:
    """The stage graph in execution order: each stage, what it reads (with the producer of
    each table) and what it writes; what `cvo run --plan` prints."""
    check_order(stages)
    lines = []
    for i, stage in enumerate(stages, 1):
        io = stage_io(stage)
        lines.append(f"{i}. {stage}")
        lines.append(f"   reads:  {_with_producers(io.reads, stage)}")
        if io.reads_prior:
            lines.append(f"   reads from earlier runs: {_with_producers(io.reads_prior, stage)}")
        lines.append(f"   writes: {', '.join(io.writes) or '(no table)'}")
    lines.append(f"every stage run appends one row to gold runs (written by {PIPELINE})")
    for stage in ON_DEMAND:
        io = stage_io(stage)
        lines.append(f"on demand (cvo {stage}): reads {_with_producers(io.reads, stage)}")
        lines.append(f"   writes: {', '.join(io.writes)}")
    return "\n".join(lines)


def _with_producers(names: tuple[str, ...], stage: str) -> str:
    def label(name: str) -> str:
        if name.startswith("bronze."):
            return name
        by = [p for p in TABLES[name].producers if p != stage]
        return f"{name} ({'/'.join(by)})" if by else name

    return ", ".join(label(n) for n in names) or "(nothing)"


def undeclared(stage: str, touched: Touched) -> list[str]:
    """What a run of `stage` read or wrote outside its declaration ('read x' / 'wrote y')."""
    io = stage_io(stage)
    readable = {*io.reads, *io.reads_prior, *io.writes}
    return [f"read {n}" for n in sorted(touched.reads - readable)] + [
        f"wrote {n}" for n in sorted(touched.writes - set(io.writes))
    ]


#: Stages with a module but not part of `cvo run` (their own command runs them).
ON_DEMAND: tuple[str, ...] = tuple(s for s in STAGE_MODULES if s not in STAGES)


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
    ctx.store.write(df, "runs")


def run_stage(ctx: StageContext, stage: str) -> StageResult:
    """Run one stage and audit it; errors are recorded, then re-raised."""
    module = importlib.import_module(STAGE_MODULES[stage])
    started = datetime.now(UTC).replace(tzinfo=None)
    t0 = time.monotonic()
    print(f"cvo: [{stage}] as of {ctx.as_of} ...", file=sys.stderr, flush=True)
    try:
        with ctx.store.recording() as touched:
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
    result.touched = touched
    stray = undeclared(stage, touched)
    if stray:  # the declaration is out of date: the plan and the order check miss this
        log.warning("stage %s touched tables it does not declare: %s", stage, ", ".join(stray))
    record_run(ctx, stage, "succeeded", result, started)
    counts = ", ".join(f"{k}={v:,}" for k, v in result.row_counts.items())
    print(f"cvo: [{stage}] done in {time.monotonic() - t0:.1f}s {counts}", file=sys.stderr, flush=True)
    return result


def run_pipeline(ctx: StageContext, stages: tuple[str, ...] = STAGES) -> dict[str, StageResult]:
    """Run `stages` in pipeline order; the first failure stops the run."""
    return {stage: run_stage(ctx, stage) for stage in stages}
