"""The champion gate of the propensity models (upsell, cross-sell, churn): pure decisions.

The gate and the report read the same numbers the same way (invariant 7):

- A version *qualifies* only when the report would let it rank subscribers
  (`cvo_spark.models.evaluation.is_no_better_than_chance` is false: ROC-AUC at least
  `CHANCE_AUC` and its 95% DeLong interval above 0.5) and it beats the logistic-regression
  baseline trained beside it on the same out-of-time rows (on `promote_metric`).
- With no usable champion, a qualifying version becomes champion.
- Otherwise it replaces the champion only when its ROC-AUC gain over the champion, on
  the same evaluation rows, has a paired 95% interval above 0
  (`cvo_spark.models.evaluation.delong_paired_difference`: DeLong for two correlated AUCs),
  and, when `promote_metric` is 'pr_auc', its PR-AUC is also higher. Never over a champion
  trained for a later as_of (a back-fill: that champion learned from this evaluation period).

Every decision carries a one-line reason; `train` records it (MLflow tag
``promotion_reason``, gold `model_evaluations` metric ``promoted``, the run's checks) and
the report and `score` quote it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from cvo_spark.models.evaluation import CHANCE_AUC, AucDifference, is_no_better_than_chance


class Decision(NamedTuple):
    promote: bool
    reason: str


@dataclass(frozen=True)
class ChampionComparison:
    """The current champion judged on the candidate's evaluation rows."""

    version: str
    metrics: Mapping[str, float]  # `binary_metrics` of the champion on those rows
    gain: AucDifference  # candidate minus champion, paired
    trained_later: str | None = None  # the champion's training as_of when after the candidate's


def _f(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _signed(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:+.3f}"


def qualification_failure(
    candidate: Mapping[str, float], baseline: Mapping[str, float], promote_metric: str = "roc_auc"
) -> str | None:
    """Why `candidate` may not become champion at all, or None when it qualifies.

    Needs ``roc_auc``, ``auc_ci_low``, ``auc_ci_high`` and `promote_metric` in the
    candidate's metrics and `promote_metric` in the baseline's (both from
    `binary_metrics` on the same evaluation rows).
    """
    auc, low, high = (candidate.get(k, float("nan")) for k in ("roc_auc", "auc_ci_low", "auc_ci_high"))
    if is_no_better_than_chance(auc, low):
        return (
            f"no better than chance: ROC-AUC {_f(auc)} (95% CI {_f(low)}-{_f(high)}) is under {CHANCE_AUC} "
            "or its interval reaches 0.50; the report says do not use it to rank"
        )
    mine, theirs = candidate.get(promote_metric, float("nan")), baseline.get(promote_metric, float("nan"))
    if not (math.isfinite(mine) and (not math.isfinite(theirs) or mine > theirs)):
        return (
            f"does not beat the logistic-regression baseline on the out-of-time rows "
            f"({promote_metric} {_f(mine)} vs baseline {_f(theirs)})"
        )
    return None


def promotion_decision(
    candidate: Mapping[str, float],
    baseline: Mapping[str, float],
    champion: ChampionComparison | None = None,
    promote_metric: str = "roc_auc",
) -> Decision:
    """Whether a newly trained version becomes champion, and why (or why not).

    `candidate` and `baseline` are `binary_metrics` of the new version and of the
    baseline fitted beside it; `champion` the current champion judged on the same rows
    (None: there is none, or it cannot score these rows). See the module docstring.
    """
    failure = qualification_failure(candidate, baseline, promote_metric)
    if failure is not None:
        kept = f"; champion v{champion.version} stays" if champion is not None else ""
        return Decision(False, f"not promoted: {failure}{kept}")
    if champion is None:
        return Decision(
            True,
            f"champion: first qualifying version: beats the baseline ({promote_metric} "
            f"{_f(candidate.get(promote_metric))} vs {_f(baseline.get(promote_metric))}) and its ROC-AUC "
            f"interval {_f(candidate.get('auc_ci_low'))}-{_f(candidate.get('auc_ci_high'))} lies above 0.50",
        )
    v, g = champion.version, champion.gain
    gain = (
        f"ROC-AUC gain over champion v{v} {_signed(g.diff)} "
        f"(paired 95% CI {_signed(g.low)} to {_signed(g.high)})"
    )
    if champion.trained_later is not None:
        return Decision(
            False,
            f"not promoted: champion v{v} was trained for a later date ({champion.trained_later}) "
            "and learned "
            f"from this evaluation period (a back-fill): no fair comparison; champion v{v} stays",
        )
    if not g.excludes_zero():
        return Decision(
            False, f"not promoted: {gain} includes 0 (not a significant improvement); champion v{v} stays"
        )
    if promote_metric != "roc_auc":
        mine, theirs = (
            candidate.get(promote_metric, float("nan")),
            champion.metrics.get(promote_metric, float("nan")),
        )
        if not (math.isfinite(mine) and (not math.isfinite(theirs) or mine > theirs)):
            return Decision(
                False,
                f"not promoted: {gain} excludes 0 but {promote_metric} {_f(mine)} is not above the "
                f"champion's {_f(theirs)}; champion v{v} stays",
            )
    return Decision(True, f"champion: {gain} excludes 0")


def gate_rows(
    promoted: bool, reason: str, champion: ChampionComparison | None, version: str, run_id: str
) -> list[tuple]:
    """`model_evaluations` rows of the gate.

    Columns: model_kind, metric, value, model_version, mlflow_run_id, reading.

    ``promoted`` (1 = this version became champion, 0 = not; the reading is the reason);
    with a champion to compare with, the paired ROC-AUC gain over it and its interval.
    """
    rows = [("gbt", "promoted", 1.0 if promoted else 0.0, version, run_id, reason)]
    if champion is not None:
        g, v = champion.gain, champion.version
        rows += [
            (
                "gbt",
                "roc_auc_gain_over_champion",
                g.diff,
                version,
                run_id,
                (
                    f"ROC-AUC minus champion v{v}'s on the same out-of-time rows: {_signed(g.diff)} "
                    f"(paired DeLong 95% CI {_signed(g.low)} to {_signed(g.high)}; "
                    "promoted only when it excludes 0)"
                ),
            ),
            (
                "gbt",
                "gain_over_champion_ci_low",
                g.low,
                version,
                run_id,
                "lower end of the paired 95% interval of that gain",
            ),
            (
                "gbt",
                "gain_over_champion_ci_high",
                g.high,
                version,
                run_id,
                "upper end of the paired 95% interval of that gain",
            ),
        ]
    return rows


def fallback_note(reason: str | None, baseline_version: str, baseline_better_than_chance: bool) -> str:
    """The `score` check when a target has no champion and its baseline scores instead."""
    caveat = (
        "" if baseline_better_than_chance else " (itself NOT shown better than chance: do not use to rank)"
    )
    why = reason or "no version of the model was ever promoted"
    return f"baseline v{baseline_version}{caveat}: no champion ({why})"
