"""Segment rules shared by the offer catalog (eligibility) and campaigns (audience).

One small, declarative rule language over a subscriber's segment and profile columns:
in-lists (value tier, persona, lifecycle, payment type) and ranges (arpu_3m, tenure).
Every key is optional; an omitted key does not restrict. Config never holds code: a rule
is data, validated here, and turned into Spark column expressions by the offer engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cvo_spark.core.schemas import ENUMS

PAYMENT_TYPES: tuple[str, ...] = ENUMS[("subscribers", "payment_type")]


def known_value(value: str, known: Iterable[str], what: str) -> str:
    """`value` when it is one of `known`, else a ValueError naming both."""
    known = tuple(known)
    if value not in known:
        raise ValueError(f"unknown {what} {value!r}; known: {', '.join(known)}")
    return value


class Eligibility(BaseModel):
    """Who a rule admits. Every key is optional; an omitted key does not restrict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value_tiers: tuple[str, ...] | None = None
    personas: tuple[str, ...] | None = None
    lifecycle: tuple[str, ...] | None = None
    payment_types: tuple[str, ...] | None = None
    min_arpu_3m: float | None = Field(None, ge=0)
    max_arpu_3m: float | None = Field(None, ge=0)
    min_tenure_days: int | None = Field(None, ge=0)
    max_tenure_days: int | None = Field(None, ge=0)

    @field_validator("payment_types")
    @classmethod
    def _payment_types(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for v in value or ():
            known_value(v, PAYMENT_TYPES, "payment type")
        return value

    @model_validator(mode="after")
    def _ranges(self) -> Eligibility:
        pairs = (
            ("arpu_3m", self.min_arpu_3m, self.max_arpu_3m),
            ("tenure_days", self.min_tenure_days, self.max_tenure_days),
        )
        for name, low, high in pairs:
            if low is not None and high is not None and low > high:
                raise ValueError(f"min_{name} {low} > max_{name} {high}")
        return self


#: The in-list keys of a rule whose names come from the segment config.
NAMED_KEYS: tuple[str, ...] = ("value_tiers", "personas", "lifecycle")


def _both(a: tuple[str, ...] | None, b: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if a is None or b is None:
        return a if b is None else b
    return tuple(x for x in a if x in b)


_Bound = TypeVar("_Bound", int, float)


def _tighter(a: _Bound | None, b: _Bound | None, pick: Callable[[_Bound, _Bound], _Bound]) -> _Bound | None:
    return a if b is None else b if a is None else pick(a, b)


def both_rules(a: Eligibility, b: Eligibility) -> Eligibility:
    """The rule admitting exactly who both `a` and `b` admit (in-lists intersected, ranges
    tightened). Built without validation: an empty result (e.g. min above max) is a rule
    nobody meets, not a config error."""
    return Eligibility.model_construct(
        value_tiers=_both(a.value_tiers, b.value_tiers),
        personas=_both(a.personas, b.personas),
        lifecycle=_both(a.lifecycle, b.lifecycle),
        payment_types=_both(a.payment_types, b.payment_types),
        min_arpu_3m=_tighter(a.min_arpu_3m, b.min_arpu_3m, max),
        max_arpu_3m=_tighter(a.max_arpu_3m, b.max_arpu_3m, min),
        min_tenure_days=_tighter(a.min_tenure_days, b.min_tenure_days, max),
        max_tenure_days=_tighter(a.max_tenure_days, b.max_tenure_days, min),
    )
