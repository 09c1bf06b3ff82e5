"""Everything that talks to MLflow: setup, model registry (champion / challenger), chart
artefacts, and what the `train` stage logs for each model it fits.

Default store (no server to start): tracking and registry in ``sqlite:///<lake>/mlflow.db``,
artefacts under ``<lake>/mlartifacts`` (the experiment is created with that
artifact_location). Config's `mlflow.tracking_uri` / `registry_uri` override both.

Registry rules: each target has a registered model ``<prefix>_<target>``. A newly trained
version gets the alias ``challenger``; it takes ``champion`` only when it passes the gate.
Propensity models: `cvo_spark.models.champion_gate` (better than chance as the report reads
it, beats the baseline beside it, and over an existing champion a ROC-AUC gain whose paired
DeLong interval excludes 0); a version that does not qualify gets no alias (`REJECTED`).
CLV and uplift: strictly better on their metric (a re-run with the same seed and data does
not displace the champion). Each propensity training also registers its
logistic-regression baseline as ``<prefix>_<target>_baseline@current``: `score` loads
``@champion`` and falls back on that baseline, saying so, when a target has no champion.

What `train` logs: each target gets one MLflow run (parameters, metrics, feature list,
snapshot dates, importance / lift / calibration charts, the model with its signature) and a
registered version ``<prefix>_<target>``. A champion that can no longer score the
evaluation rows (say, trained on a feature that was since removed) counts as absent.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, cast

import mlflow
import mlflow.pyfunc
import mlflow.spark
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient
from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cvo_spark.core.config import Config
from cvo_spark.core.errors import CvoError
from cvo_spark.models import clv as clv_lib
from cvo_spark.models import evaluation as ev
from cvo_spark.models.champion_gate import ChampionComparison, promotion_decision, qualification_failure
from cvo_spark.models.labels import EVALUATION
from cvo_spark.models.propensity import FEATURE_LABELS, regression_predictions, with_scores
from cvo_spark.models.training import ClvFit, TargetFit, clv_evaluation_frame

CHAMPION = "champion"
CHALLENGER = "challenger"
#: Alias of the newest baseline version in ``<prefix>_<target>_baseline``.
CURRENT = "current"
#: Model-version tag with the champion gate's one-line reason.
REASON_TAG = "promotion_reason"
#: Per-run JSON with the feature list, snapshot dates, reason-code statistics, CLV parameters.
META_FILE = "model_meta.json"


class MissingModelError(CvoError):
    """No champion model is registered for a target (run the train stage first)."""


@dataclass(frozen=True)
class TrackingSetup:
    tracking_uri: str
    registry_uri: str
    experiment_id: str


def default_tracking_uri(lake: str) -> str:
    return f"sqlite:///{Path(lake).absolute() / 'mlflow.db'}"


def default_artifact_location(lake: str) -> str:
    return (Path(lake).absolute() / "mlartifacts").as_uri()


def configure_mlflow(
    lake: str, experiment: str, tracking_uri: str | None = None, registry_uri: str | None = None
) -> TrackingSetup:
    """Point MLflow at the configured (or default lake-local) store and select the experiment."""
    uri = tracking_uri or default_tracking_uri(lake)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    reg = registry_uri or uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(reg)
    stray = Path("mlruns")
    stray_existed = stray.exists()
    client = MlflowClient(tracking_uri=uri, registry_uri=reg)
    client.search_experiments(max_results=1)  # opens the store (creates its tables) now
    # MLflow's SQL store creates an empty ./mlruns (its default root for experiment 0, which
    # cvo never uses) in the working directory; do not leave that litter behind.
    if not stray_existed and stray.is_dir() and not any(stray.iterdir()):
        stray.rmdir()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        location = None if tracking_uri else default_artifact_location(lake)
        experiment_id = client.create_experiment(experiment, artifact_location=location)
    else:
        experiment_id = found.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return TrackingSetup(uri, reg, experiment_id)


def client() -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow.get_tracking_uri(), registry_uri=mlflow.get_registry_uri())


def registered_name(prefix: str, target: str) -> str:
    return f"{prefix}_{target}"


def version_by_alias(name: str, alias: str):
    """The model version holding `alias`, or None (no such model or alias)."""
    try:
        return client().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def beats(new: float | None, incumbent: float | None, higher_is_better: bool = True) -> bool:
    """Strictly better on the promotion metric; any number beats a missing or NaN incumbent."""
    if new is None or math.isnan(new):
        return False
    if incumbent is None or math.isnan(incumbent):
        return True
    return new > incumbent if higher_is_better else new < incumbent


def champion_trained_after(name: str, as_of: str | None, alias: str = CHAMPION) -> str | None:
    """The `alias` holder's training as_of when it is later than `as_of` (ISO dates), else None."""
    current = version_by_alias(name, alias) if as_of else None
    trained = (current.tags or {}).get("as_of") if current is not None else None
    return trained if trained is not None and trained > as_of else None


#: What `assign_aliases` says of a version that may not be promoted at all.
REJECTED = "rejected"


def assign_aliases(
    name: str,
    version: str,
    new_metric: float | None,
    champion_metric: float | None,
    higher_is_better: bool = True,
    promotable: bool = True,
    as_of: str | None = None,
    better: bool | None = None,
) -> str:
    """Give the new `version` its alias; returns 'champion', 'challenger' or 'rejected'.

    A version that is not `promotable` (it does not pass the gate's absolute test, e.g. a
    classifier the report calls no better than chance) gets no alias, even when there is no
    champion yet. Otherwise the first version becomes champion, and a later one is
    challenger, promoted only when it is `better` (the caller's verdict, e.g.
    `cvo_spark.models.champion_gate.promotion_decision`) or, when `better` is None, when it
    `beats` the champion's metric on the same evaluation data; never over a champion
    trained for a date after `as_of` (ISO date of the new version's training).
    """
    c = client()
    if not promotable:
        return REJECTED
    current = version_by_alias(name, CHAMPION)
    if current is not None and champion_trained_after(name, as_of) is not None:
        # A back-fill: the champion was trained for a later date, so its training rows
        # include this run's evaluation period. No fair comparison exists; the newer
        # champion stays.
        c.set_registered_model_alias(name, CHALLENGER, str(version))
        return CHALLENGER
    wins = better if better is not None else beats(new_metric, champion_metric, higher_is_better)
    if current is None or wins:
        c.set_registered_model_alias(name, CHAMPION, str(version))
        if version_by_alias(name, CHALLENGER) is not None:
            c.delete_registered_model_alias(name, CHALLENGER)
        return CHAMPION
    c.set_registered_model_alias(name, CHALLENGER, str(version))
    return CHALLENGER


def spark_pip_requirements(with_xgboost: bool = False) -> list[str]:
    """Pinned requirements, given explicitly so MLflow does not spawn a process to infer them."""
    from importlib.metadata import version

    pins = [f"pyspark=={version('pyspark')}", f"mlflow=={version('mlflow')}"]
    if with_xgboost:
        import xgboost

        pins.append(f"xgboost=={xgboost.__version__}")
    return pins


def log_spark_model(
    model, registered: str, signature, with_xgboost: bool = False, artifact_path: str = "model"
) -> str:
    """Log a fitted `PipelineModel` with the MLflow spark flavour and register it; returns the version."""
    info = mlflow.spark.log_model(
        model,
        artifact_path=artifact_path,
        registered_model_name=registered,
        signature=signature,
        pip_requirements=spark_pip_requirements(with_xgboost),
    )
    return str(info.registered_model_version)


def load_spark_model(name: str, alias: str = CHAMPION):
    """Load ``models:/<name>@<alias>`` as a Spark `PipelineModel` (None when there is none)."""
    mv = version_by_alias(name, alias)
    if mv is None:
        return None, None
    return mlflow.spark.load_model(f"models:/{name}@{alias}"), mv


def tag_version(name: str, version: str, tags: dict[str, str]) -> None:
    c = client()
    for key, value in tags.items():
        c.set_model_version_tag(name, str(version), key, str(value))


class ClvPyfunc(PythonModel):
    """The BG/NBD + Gamma-Gamma parameters as an MLflow pyfunc.

    `predict` takes distinct (frequency, recency_days, t_days, monetary_value) rows (small,
    on the driver) and returns expected spend over ``params['horizon_days']`` (365 by
    default). `score` reads `params` and computes in Spark with `cvo_spark.models.clv.with_clv`.
    """

    # No type hints on `predict`: the explicit signature given at log time validates inputs,
    # so MLflow's hint-based validation (and its warning about missing hints) is skipped.
    _skip_type_hint_validation = True

    def __init__(self, params: dict[str, float]):
        self.params = dict(params)

    def predict(self, context, model_input, params=None):
        import numpy as np

        from cvo_spark.models.clv import ClvModel, expected_transactions_table

        model = ClvModel.from_dict(self.params)
        horizon = float((params or {}).get("horizon_days", 365.0))
        table = expected_transactions_table(model, model_input, horizon)
        gg = model.gamma_gamma
        x = model_input["frequency"].to_numpy(dtype=float)
        m = np.nan_to_num(model_input["monetary_value"].to_numpy(dtype=float))
        spend = (gg.gamma + x * m) * gg.p / (gg.p * x + gg.q - 1.0)
        return table["expected_transactions"].to_numpy() * spend


def log_clv_model(params: dict[str, float], registered: str) -> str:
    """Log the CLV parameters as a pyfunc model and register it; returns the version."""
    import pandas as pd
    from mlflow.models import infer_signature

    example = pd.DataFrame(
        {"frequency": [0, 3], "recency_days": [0, 40], "t_days": [60, 90], "monetary_value": [0.0, 25_000.0]}
    )
    model = ClvPyfunc(params)
    signature = infer_signature(example, model.predict(None, example), params={"horizon_days": 365.0})
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=model,
        registered_model_name=registered,
        signature=signature,
        pip_requirements=spark_pip_requirements(),
    )
    return str(info.registered_model_version)


def load_clv_champion(name: str):
    """(kind, model) of the CLV champion: ('bgnbd', ClvModel) or ('gbt', PipelineModel); None if none."""
    from cvo_spark.models.clv import ClvModel

    mv = version_by_alias(name, CHAMPION)
    if mv is None:
        return None
    kind = (mv.tags or {}).get("model_kind", "bgnbd")
    if kind == "bgnbd":
        wrapper = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}").unwrap_python_model()
        return kind, ClvModel.from_dict(wrapper.params)
    return kind, mlflow.spark.load_model(f"models:/{name}@{CHAMPION}")


def log_json(obj: Any, artifact_file: str) -> None:
    mlflow.log_dict(obj, artifact_file)


def load_run_json(run_id: str, artifact_file: str) -> Any:
    path = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=artifact_file, tracking_uri=mlflow.get_tracking_uri()
    )
    return json.loads(Path(path).read_text())


# --------------------------------------------------------------------------- charts
def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def log_importance_artifacts(importances: dict[str, float], labels: dict[str, str]) -> None:
    """Feature importance as a csv and a horizontal bar chart (top 20)."""
    plt = _plt()
    ranked = sorted(importances.items(), key=lambda kv: (-kv[1], kv[0]))
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp, "feature_importance.csv")
        csv.write_text(
            "feature,label,importance\n" + "".join(f"{f},{labels.get(f, f)},{v:.6f}\n" for f, v in ranked)
        )
        top = ranked[:20][::-1]
        fig, ax = plt.subplots(figsize=(7, max(3, 0.3 * len(top))))
        ax.barh([labels.get(f, f) for f, _ in top], [v for _, v in top], color="#3b6ea5")
        ax.set_xlabel("importance (share of total)")
        ax.set_title("Feature importance")
        fig.tight_layout()
        fig.savefig(Path(tmp, "feature_importance.png"), dpi=90)
        plt.close(fig)
        mlflow.log_artifacts(tmp, artifact_path="charts")


def log_curve_charts(
    target: str, lift: Sequence, calibration: Sequence, baseline_lift: Sequence = ()
) -> None:
    """Cumulative lift and calibration (reliability) charts as png artefacts."""
    plt = _plt()
    with tempfile.TemporaryDirectory() as tmp:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([p.x for p in lift], [p.y for p in lift], marker="o", label="GBT (calibrated)")
        if baseline_lift:
            ax.plot([p.x for p in baseline_lift], [p.y for p in baseline_lift], marker="s", label="baseline")
        ax.axhline(1.0, color="grey", ls="--", label="random")
        ax.set_xlabel("share of subscribers targeted (top by score)")
        ax.set_ylabel("cumulative lift")
        ax.set_title(f"{target}: lift on the out-of-time set")
        ax.legend()
        fig.tight_layout()
        fig.savefig(Path(tmp, "lift.png"), dpi=90)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot([0, 1], [0, 1], color="grey", ls="--", label="perfectly calibrated")
        ax.plot([p.x for p in calibration], [p.y for p in calibration], marker="o", label="model")
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("observed rate")
        ax.set_title(f"{target}: calibration (out-of-time)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(Path(tmp, "calibration.png"), dpi=90)
        plt.close(fig)
        mlflow.log_artifacts(tmp, artifact_path="charts")


def finite_metrics(metrics: dict[str, float], prefix: str = "") -> dict[str, float]:
    """Metrics MLflow accepts (finite floats), optionally prefixed."""
    return {f"{prefix}{k}": float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


# ---- what the train stage logs per model ----

log = logging.getLogger(__name__)


def baseline_name(prefix: str, target: str) -> str:
    """Registered name of a target's logistic-regression baseline."""
    return registered_name(prefix, f"{target}_baseline")


def latest_version(name: str):
    """The newest version of registered model `name`, or None."""
    try:
        versions = client().search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    return max(versions, key=lambda v: int(v.version), default=None)


def _champion_comparison(
    name: str, evaluation: DataFrame, fit: TargetFit, as_of: str
) -> ChampionComparison | None:
    """The current champion judged beside `fit.model` on this run's evaluation rows.

    None: no usable champion.

    Both models score the same rows, so their ROC-AUCs are compared paired
    (`evaluation.delong_paired_difference`). A champion that cannot score these rows (e.g.
    trained on a feature list that no longer exists) is treated as absent, so the new
    version can replace it; the log says so.
    """
    model, mv = load_spark_model(name)
    if model is None:
        return None
    label = f"label_{fit.target}"
    try:
        both = with_scores(fit.model, evaluation, fit.target, "_p_new")
        both = with_scores(model, both, fit.target, "_p_champion").select(
            "subscriber_id", label, "_p_new", "_p_champion"
        )
        both = both.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            metrics = ev.binary_metrics(both, label, "_p_champion")
            gain = ev.delong_paired_difference(both, label, "_p_new", "_p_champion")
        finally:
            both.unpersist()
    except Exception as err:  # noqa: BLE001 - any scoring failure means "cannot compare"
        log.warning(
            "champion %s v%s cannot score the evaluation rows (%s); treating it as absent",
            name,
            mv.version,
            str(err).splitlines()[0],
        )
        return None
    return ChampionComparison(str(mv.version), metrics, gain, champion_trained_after(name, as_of))


@dataclass(frozen=True)
class TargetLog:
    """What `log_target` registered and decided for one target."""

    version: str
    run_id: str
    status: str  # 'champion' | 'challenger' | 'rejected'
    reason: str  # the champion gate's one line
    champion: ChampionComparison | None  # the champion it was compared with, if any
    baseline_version: str


def _log_baseline(fit: TargetFit, prefix: str, sample: DataFrame, as_of: str) -> str:
    """Register the baseline fitted beside `fit` (in the active run); it becomes ``@current``.

    ``@current`` moves to it unless the current baseline was trained for a later date (a
    back-fill must not replace what a later date's scoring falls back on).
    """
    from mlflow.models import infer_signature

    name = baseline_name(prefix, fit.target)
    baseline = fit.baseline_model
    if baseline is None:
        raise ValueError(f"{fit.target}: no baseline model was fitted to register as {name}")
    out = with_scores(baseline, sample, fit.target, "p").select("p")
    signature = infer_signature(sample.toPandas(), out.toPandas())
    version = log_spark_model(baseline, name, signature, artifact_path="baseline_model")
    chance = ev.is_no_better_than_chance(
        fit.baseline_metrics.get("roc_auc", float("nan")),
        fit.baseline_metrics.get("auc_ci_low", float("nan")),
    )
    tag_version(
        name,
        version,
        {"model_kind": "baseline", "as_of": as_of, "better_than_chance": "0" if chance else "1"},
    )
    if champion_trained_after(name, as_of, CURRENT) is None:
        client().set_registered_model_alias(name, CURRENT, str(version))
    return version


def log_target(
    fit: TargetFit,
    frame: DataFrame,
    config: Config,
    as_of: date,
    run_id: str,
    snapshots: Sequence[date],
) -> TargetLog:
    """Log one target's run (params, metrics, meta, charts, model and baseline), register both, gate.

    The new version's alias follows `champion_gate.promotion_decision`; its reason is
    recorded as the run tag and version tag ``promotion_reason`` and comes back in the
    `TargetLog`.
    """
    from mlflow.models import infer_signature

    cfg = config.models
    prefix = config.mlflow.model_prefix
    name = registered_name(prefix, fit.target)
    evaluation = frame.where(F.col("split") == EVALUATION)
    champion = _champion_comparison(name, evaluation, fit, as_of.isoformat())
    decision = promotion_decision(fit.metrics, fit.baseline_metrics, champion, cfg.promote_metric)
    qualifies = qualification_failure(fit.metrics, fit.baseline_metrics, cfg.promote_metric) is None
    with mlflow.start_run(run_name=f"{fit.target} {as_of}") as run:
        mlflow.set_tags({"target": fit.target, "as_of": as_of.isoformat(), "cvo_run_id": run_id})
        mlflow.log_params(
            {
                "model_kind": "gbt",
                "engine": fit.engine,
                "seed": cfg.seed,
                "gbt_max_iter": cfg.gbt_max_iter,
                "gbt_max_depth": cfg.gbt_max_depth,
                "horizon_days": cfg.horizon_days,
                "snapshots": ",".join(d.isoformat() for d in snapshots),
                "calibration": "isotonic on the calibration half of the latest snapshot",
                "n_features": len(fit.features),
            }
        )
        mlflow.log_metrics(finite_metrics(fit.metrics))
        mlflow.log_metrics(finite_metrics(fit.baseline_metrics, "baseline_"))
        log_json(
            {
                "target": fit.target,
                "model_kind": "gbt",
                "engine": fit.engine,
                "features": fit.features,
                "snapshot_dates": [d.isoformat() for d in snapshots],
                "reason_stats": fit.stats,
                "baseline_reason_stats": fit.baseline_stats,
                "as_of": as_of.isoformat(),
            },
            META_FILE,
        )
        log_importance_artifacts(fit.importances, FEATURE_LABELS)
        log_curve_charts(fit.target, fit.lift, fit.calibration, fit.baseline_lift)
        sample = frame.select(*fit.features).limit(5)
        signature = infer_signature(
            sample.toPandas(), with_scores(fit.model, sample, fit.target, "p").select("p").toPandas()
        )
        version = log_spark_model(fit.model, name, signature, with_xgboost=fit.engine == "xgboost")
        baseline_version = _log_baseline(fit, prefix, sample, as_of.isoformat())
        status = assign_aliases(
            name, version, None, None, promotable=qualifies, as_of=as_of.isoformat(), better=decision.promote
        )
        reason = decision.reason
        if (status == CHAMPION) != decision.promote:
            # Only the registry's own back-fill guard can overrule the gate (a champion
            # trained for a later date that could not score these rows).
            reason = "not promoted: the champion was trained for a later date (a back-fill); it stays"
        if status != CHAMPION:
            log.warning("%s v%s %s: %s", name, version, status, reason)
        if champion is not None:
            gain = champion.gain
            mlflow.log_metrics(
                finite_metrics(
                    {
                        f"champion_{cfg.promote_metric}": champion.metrics.get(
                            cfg.promote_metric, float("nan")
                        ),
                        "auc_gain_over_champion": gain.diff,
                        "auc_gain_ci_low": gain.low,
                        "auc_gain_ci_high": gain.high,
                    }
                )
            )
        mlflow.set_tags({"registry_status": status, REASON_TAG: reason[:5000]})
        tag_version(
            name,
            version,
            {
                "model_kind": "gbt",
                "engine": fit.engine,
                "as_of": as_of.isoformat(),
                REASON_TAG: reason[:5000],
            },
        )
        return TargetLog(version, run.info.run_id, status, reason, champion, baseline_version)


def log_clv(
    fit: ClvFit,
    frame: DataFrame,
    silver: dict[str, DataFrame],
    config: Config,
    as_of: date,
    run_id: str,
    snapshots: Sequence[date],
) -> tuple[str, str, str]:
    """Log and register the CLV model; promoted when its WAPE (lower is better) beats the champion's."""
    import mlflow

    cfg = config.models
    name = registered_name(config.mlflow.model_prefix, "clv")
    champion_wape = _clv_champion_wape(name, frame, silver, snapshots[-1], cfg.horizon_days)
    with mlflow.start_run(run_name=f"clv {as_of}") as run:
        mlflow.set_tags({"target": "clv", "as_of": as_of.isoformat(), "cvo_run_id": run_id})
        mlflow.log_params(
            {
                "model_kind": fit.kind,
                "horizon_days": cfg.horizon_days,
                "clv_horizon_months": cfg.clv_horizon_months,
                "snapshot": snapshots[-1].isoformat(),
            }
        )
        mlflow.log_metrics(finite_metrics(fit.metrics))
        mlflow.log_metrics(finite_metrics(fit.baseline_metrics, "naive_"))
        meta = {
            "target": "clv",
            "model_kind": fit.kind,
            "features": fit.features,
            "snapshot_dates": [d.isoformat() for d in snapshots],
            "as_of": as_of.isoformat(),
            "horizon_days": cfg.horizon_days,
        }
        # `ClvFit.kind` says which model it holds: a ClvModel for bgnbd, else a PipelineModel.
        if fit.kind == "bgnbd":
            params = cast(clv_lib.ClvModel, fit.model).as_dict()
            meta["params"] = params
            mlflow.log_params({k: round(v, 6) for k, v in params.items()})
        log_json(meta, META_FILE)
        if fit.kind == "bgnbd":
            version = log_clv_model(cast(clv_lib.ClvModel, fit.model).as_dict(), name)
        else:
            from mlflow.models import infer_signature

            pipeline = cast(PipelineModel, fit.model)
            sample = frame.select(*fit.features).limit(5)
            out = regression_predictions(
                pipeline, sample.withColumn("subscriber_id", F.lit("x")), "clv", "clv"
            )
            version = log_spark_model(
                pipeline, name, infer_signature(sample.toPandas(), out.select("clv").toPandas())
            )
        status = assign_aliases(
            name,
            version,
            fit.metrics.get("wape"),
            champion_wape,
            higher_is_better=False,
            as_of=as_of.isoformat(),
        )
        if champion_wape is not None:
            mlflow.log_metric("champion_wape", champion_wape)
        mlflow.set_tag("registry_status", status)
        tag_version(name, version, {"model_kind": fit.kind, "as_of": as_of.isoformat()})
        return version, run.info.run_id, status


def _clv_champion_wape(
    name: str, frame: DataFrame, silver: dict[str, DataFrame], latest: date, horizon_days: int
) -> float | None:
    """The CLV champion's WAPE on this run's evaluation half (None: no usable champion)."""
    champion = load_clv_champion(name)
    if champion is None:
        return None
    kind, model = champion
    truth = clv_evaluation_frame(silver, frame, latest, horizon_days)
    try:
        if kind == "bgnbd":
            pred = clv_lib.clv_for_subscribers(
                silver["recharges"],
                silver["purchases"],
                truth,
                model,
                latest,
                horizon_days,
                "predicted_spend",
            )
        else:
            pred = regression_predictions(
                model, frame.where(F.col("split") == EVALUATION), "clv", "predicted_spend"
            )
        judged = truth.join(pred, on="subscriber_id", how="left").fillna({"predicted_spend": 0.0})
        return ev.regression_metrics(judged, "actual_spend", "predicted_spend")["wape"]
    except Exception as err:  # noqa: BLE001 - any scoring failure means "cannot compare"
        log.warning(
            "CLV champion %s cannot score the evaluation rows (%s); treating it as absent",
            name,
            str(err).splitlines()[0],
        )
        return None


# ---- the uplift model ----


def uplift_champion_qini(name: str, evaluation: DataFrame, bins: int) -> float | None:
    """The uplift champion's Qini coefficient on this run's evaluation rows (None: no usable champion)."""
    from cvo_spark.models.qini import bucket_sums, qini_from_sums
    from cvo_spark.models.uplift import with_uplift

    model, mv = load_spark_model(name)
    if model is None:
        return None
    try:
        scored = with_uplift(model, evaluation)
        sums = bucket_sums(scored, ["uplift"], "treated", "label", bins=bins)
    except Exception as err:  # noqa: BLE001 - any scoring failure means "cannot compare"
        log.warning(
            "champion %s v%s cannot score the evaluation rows (%s); treating it as absent",
            name,
            mv.version,
            str(err).splitlines()[0],
        )
        return None
    return qini_from_sums(sums["uplift"][0]).coefficient


def log_uplift(
    fit,
    evaluation: DataFrame,
    comparison,
    meta: dict[str, Any],
    params: dict[str, Any],
    config: Config,
    as_of: date,
    run_id: str,
    bins: int,
) -> tuple[str, str, str]:
    """Log the uplift model's run (params, Qini metrics, meta, model), register it, set its alias.

    Promotable only when the lower end of its Qini coefficient's bootstrap interval is
    above 0 (the ranking is shown better than random); then champion when it beats the
    champion's Qini on the same evaluation rows. Returns (version, run_id, status).
    """
    from mlflow.models import infer_signature

    name = registered_name(config.mlflow.model_prefix, "uplift")
    champion_metric = uplift_champion_qini(name, evaluation, bins)
    qini = comparison.results["uplift"]
    low, high = comparison.intervals["uplift"]
    with mlflow.start_run(run_name=f"uplift {as_of}") as run:
        mlflow.set_tags({"target": "uplift", "as_of": as_of.isoformat(), "cvo_run_id": run_id})
        mlflow.log_params({**params, "model_kind": "t_learner", "n_features": len(fit.features)})
        metrics = {
            "qini_coefficient": qini.coefficient,
            "qini_ci_low": low,
            "qini_ci_high": high,
            **{f"uplift_top{round(f * 100)}": v for f, v in qini.uplift_at.items()},
            **{
                f"qini_{other}": comparison.results[other].coefficient
                for other in comparison.results
                if other != "uplift"
            },
        }
        mlflow.log_metrics(finite_metrics(metrics))
        log_json({**meta, "as_of": as_of.isoformat()}, META_FILE)
        sample = evaluation.select(*fit.features).limit(5)
        from cvo_spark.models.uplift import with_uplift

        out = with_uplift(fit.model, evaluation.limit(5)).select("p_accept_if_contacted", "p_accept_if_not")
        signature = infer_signature(sample.toPandas(), out.toPandas())
        version = log_spark_model(fit.model, name, signature)
        promotable = math.isfinite(low) and low > 0
        status = assign_aliases(
            name, version, qini.coefficient, champion_metric, promotable=promotable, as_of=as_of.isoformat()
        )
        if not promotable:
            log.warning(
                "%s v%s: Qini coefficient %.4f, interval [%.4f, %.4f] reaches 0 (no better than random "
                "shown): not promoted",
                name,
                version,
                qini.coefficient,
                low,
                high,
            )
        if champion_metric is not None:
            mlflow.log_metric("champion_qini_coefficient", champion_metric)
        mlflow.set_tag("registry_status", status)
        tag_version(name, version, {"model_kind": "t_learner", "as_of": as_of.isoformat()})
        return version, run.info.run_id, status
