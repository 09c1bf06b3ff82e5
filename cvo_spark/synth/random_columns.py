"""Counter-based random columns: every draw is a hash of (seed, row key, stream).

A row's values depend only on its key, never on partitioning or execution order, so
generated data are the same on one core or a cluster (DESIGN invariant 5). Uniforms are
the top 53 bits of ``xxhash64``; the other distributions are transforms of them.
Streams are small integers chosen by the caller (`cvo_spark.synth.generate.Stream`), one per
independent quantity, so adding a column never shifts another column's values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import accumulate

from pyspark.sql import Column
from pyspark.sql import functions as F

_TWO_POW_53 = float(2**53)


def row_key(seed: int, *cols: str) -> tuple[Column, ...]:
    """The hash key of a row: the seed and the columns that identify it."""
    return (F.lit(seed).cast("long"), *[F.col(c) for c in cols])


def uniform(key: Sequence[Column], stream: int, sub: int = 0) -> Column:
    """Uniform double in (0, 1): the top 53 bits of xxhash64(key, stream, sub)."""
    bits = F.shiftrightunsigned(F.xxhash64(*key, F.lit(int(stream)), F.lit(sub)), 11)
    return (bits.cast("double") + 0.5) / _TWO_POW_53


def normal(key: Sequence[Column], stream: int) -> Column:
    """Standard normal by Box-Muller from two uniforms of `stream`."""
    radius = F.sqrt(F.lit(-2.0) * F.log(uniform(key, stream, 1)))
    return radius * F.cos(F.lit(2.0 * math.pi) * uniform(key, stream, 2))


def lognormal(key: Sequence[Column], stream: int, sigma: float) -> Column:
    """Lognormal multiplier with mean 1 and log-scale `sigma`."""
    return F.exp(F.lit(sigma) * normal(key, stream) - F.lit(sigma * sigma / 2.0))


def exponential(key: Sequence[Column], stream: int, sub: int = 0) -> Column:
    """Exponential with mean 1 (inverse CDF)."""
    return -F.log(uniform(key, stream, sub))


def gamma_int(key: Sequence[Column], stream: int, shape: int) -> Column:
    """Gamma with integer `shape` and mean 1: a mean of `shape` exponentials (exact)."""
    total = exponential(key, stream, 1)
    for sub in range(2, shape + 1):
        total = total + exponential(key, stream, sub)
    return total / F.lit(float(shape))


def attribute(key: Sequence[Column], stream: int, i: int) -> Column:
    """Uniform for the i-th attribute of an event of `stream` (sub-streams 1-3 place the event)."""
    return uniform(key, stream, 10 + i)


def stochastic_round(x: Column, u: Column) -> Column:
    """floor(x + u): an integer with expectation x for a uniform u."""
    return F.floor(x + u).cast("int")


def case_by_bounds(x: Column, values: Sequence, upper_bounds: Sequence) -> Column:
    """values[i] for the first i with x < upper_bounds[i]; the last value otherwise."""
    expr = F.when(x < upper_bounds[0], F.lit(values[0]))
    for value, bound in zip(values[1:-1], upper_bounds[1:], strict=True):
        expr = expr.when(x < bound, F.lit(value))
    return expr.otherwise(F.lit(values[-1]))


def cumulative(weights: Sequence[float]) -> list[float]:
    total = float(sum(weights))
    return [c / total for c in accumulate(weights)][:-1]


def choice(u: Column, values: Sequence, weights: Sequence[float]) -> Column:
    """A categorical draw of `values` with `weights` from the uniform `u`."""
    return case_by_bounds(u, values, cumulative(weights))


def sql_literal(value: str | float) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, float):
        return f"{value!r}D"  # a bare 0.3 would be DECIMAL in Spark SQL
    return str(int(value))


def literal_array(values: tuple) -> Column:
    """An array literal in one expression (one call to the JVM, not one per element)."""
    return F.expr(f"array({', '.join(sql_literal(v) for v in values)})")


def by_persona(values: Sequence) -> Column:
    """values[persona_idx] for a row's persona (one value per entry of PERSONAS)."""
    return literal_array(tuple(values))[F.col("persona_idx")]


def persona_choice(u: Column, values: Sequence, weights_by_persona: Sequence[Sequence[float]]) -> Column:
    """A categorical draw whose weights depend on the row's persona."""
    per_persona = [cumulative(w) for w in weights_by_persona]
    bounds = [by_persona([c[i] for c in per_persona]) for i in range(len(values) - 1)]
    return case_by_bounds(u, values, bounds)


def pick(values: Sequence, index: Column) -> Column:
    """values[index] for an integer column."""
    return literal_array(tuple(values))[index]
