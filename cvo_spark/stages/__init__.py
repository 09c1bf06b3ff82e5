"""Batch stages: one module each with ``run(ctx: StageContext) -> StageResult``.

Stages are the IO layer of the pipeline: they read through `ctx.store`, call the pure
transforms of the capability modules (`cvo_spark.features`, `cvo_spark.segments`, ...)
with plain values from config, and write with the mode that keeps the stage idempotent.
"""
