"""Typed, validated configuration.

YAML under `conf/` is parsed once into frozen pydantic models. An unknown or mistyped
key, or a bad value, raises `ConfigError` with the dotted path of the key, e.g.
``segments.personas.k_min: Input should be greater than 0``. Transforms never read
config: jobs pass plain values to them.

Secrets (the pseudonymisation key) are never in YAML: config names the environment
variable that holds them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cvo_spark.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- infra
class SparkConfig(_Section):
    master: str = "local[*]"
    app_name: str = "cvo_spark"
    shuffle_partitions: int = Field(8, gt=0)
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "WARN"
    conf: dict[str, str] = Field(default_factory=dict)


class TablesConfig(_Section):
    """Where tables live.

    Each layer is either a folder under the lake root (``bronze``) or a catalog schema
    (``main.cvo_bronze``, recognised by the dot). ``overrides`` maps one table name to a
    full path or ``catalog.schema.table``.
    """

    bronze: str = "bronze"
    silver: str = "silver"
    gold: str = "gold"
    overrides: dict[str, str] = Field(default_factory=dict)


class MlflowConfig(_Section):
    tracking_uri: str | None = None  # None: a local store under <lake>/mlruns
    registry_uri: str | None = None
    experiment: str = "cvo_spark"
    model_prefix: str = "cvo"


class PrivacyConfig(_Section):
    pseudonymize: bool = False
    key_env: str = "CVO_PSEUDONYM_KEY"


# --------------------------------------------------------------------------- stages
class IngestConfig(_Section):
    future_tolerance_hours: float = Field(24.0, ge=0)
    privacy: PrivacyConfig = PrivacyConfig()


class FeatureWindows(_Section):
    arpu_short_days: int = Field(30, gt=0)
    arpu_long_days: int = Field(90, gt=0)
    trend_recent_days: int = Field(30, gt=0)
    trend_prior_days: int = Field(60, gt=0)
    quota_days: int = Field(30, gt=0)
    offer_history_days: int = Field(90, gt=0)

    @model_validator(mode="after")
    def _short_within_long(self) -> "FeatureWindows":
        if self.arpu_short_days > self.arpu_long_days:
            raise ValueError("arpu_short_days must not exceed arpu_long_days")
        return self


class FeaturesConfig(_Section):
    windows: FeatureWindows = FeatureWindows()


class TierRule(_Section):
    name: str
    min_arpu_3m: float = Field(0.0, ge=0)
    min_los_days: int = Field(0, ge=0)


class ValueTiersConfig(_Section):
    """High Value = LOS > min_los_days and arpu_3m > min_arpu_3m (strict, as the business says)."""

    high_value_name: str = "High Value"
    high_value_min_los_days: int = Field(180, ge=0)
    high_value_min_arpu_3m: float = Field(100_000.0, ge=0)
    ladder: tuple[TierRule, ...] = (
        TierRule(name="Priority", min_arpu_3m=150_000, min_los_days=180),
        TierRule(name="Gold", min_arpu_3m=50_000, min_los_days=90),
        TierRule(name="Mass", min_arpu_3m=0, min_los_days=0),
    )

    @model_validator(mode="after")
    def _ladder_ends_in_catch_all(self) -> "ValueTiersConfig":
        if not self.ladder:
            raise ValueError("ladder must name at least one tier")
        last = self.ladder[-1]
        if last.min_arpu_3m != 0 or last.min_los_days != 0:
            raise ValueError("the last ladder tier must be a catch-all (min_arpu_3m: 0, min_los_days: 0)")
        return self


class LifecycleConfig(_Section):
    new_max_days: int = Field(90, gt=0)
    new_name: str = "new"
    base_name: str = "base"


class PersonaNamingRule(_Section):
    """A persona gets the first rule whose conditions its centroid meets (original units)."""

    name: str
    min_voice_sms_share: float | None = None
    min_digital_share: float | None = None
    min_arpu_3m: float | None = None
    max_arpu_3m: float | None = None


class PersonasConfig(_Section):
    k: int | None = Field(None, gt=1)
    k_min: int = Field(2, gt=1)
    k_max: int = Field(8, gt=1)
    seed: int = 42
    max_iter: int = Field(40, gt=0)
    fit_sample_rows: int = Field(200_000, gt=0)
    silhouette_sample_rows: int = Field(50_000, gt=0)
    features: tuple[str, ...] = (
        "voice_share",
        "sms_share",
        "data_share",
        "digital_share",
        "arpu_3m",
        "data_mb_3m",
        "voice_minutes_3m",
        "recharge_count_3m",
    )
    log_features: tuple[str, ...] = ("arpu_3m", "data_mb_3m", "voice_minutes_3m", "recharge_count_3m")
    naming: tuple[PersonaNamingRule, ...] = (
        PersonaNamingRule(name="Legacy Active", min_voice_sms_share=0.5),
        PersonaNamingRule(name="Digital Active", min_digital_share=0.3),
        PersonaNamingRule(name="Socially Active", min_arpu_3m=60_000),
        PersonaNamingRule(name="Traditional Active"),
    )

    @model_validator(mode="after")
    def _k_range(self) -> "PersonasConfig":
        if self.k_min > self.k_max:
            raise ValueError(f"k range is empty: k_min {self.k_min} > k_max {self.k_max}")
        missing = set(self.log_features) - set(self.features)
        if missing:
            raise ValueError(f"log_features not in features: {sorted(missing)}")
        return self


class MatrixConfig(_Section):
    method: Literal["median", "fixed"] = "median"
    revenue_threshold: float | None = None
    usage_threshold: float | None = None


class SegmentsConfig(_Section):
    value_tiers: ValueTiersConfig = ValueTiersConfig()
    lifecycle: LifecycleConfig = LifecycleConfig()
    personas: PersonasConfig = PersonasConfig()
    matrix: MatrixConfig = MatrixConfig()
    tactics: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    b2b_k: int | None = Field(3, gt=1)


class ModelsConfig(_Section):
    horizon_days: int = Field(30, gt=0)
    training_snapshots: int = Field(3, gt=1)
    snapshot_spacing_days: int = Field(30, gt=0)
    seed: int = 7
    gbt_max_iter: int = Field(40, gt=0)
    gbt_max_depth: int = Field(5, gt=0)
    auc_ceiling: float = Field(0.99, gt=0.5, le=1.0)
    promote_metric: Literal["roc_auc", "pr_auc"] = "roc_auc"
    upsell_arpu_increase: float = Field(0.2, gt=0)
    inactive_days: int = Field(30, gt=0)
    clv_method: Literal["bgnbd", "gbt"] = "bgnbd"
    clv_horizon_months: int = Field(12, gt=0)
    reason_codes: int = Field(3, gt=0)


class ChecksConfig(_Section):
    freshness_max_days: int = Field(2, ge=0)
    min_coverage: float = Field(0.05, ge=0, le=1)
    max_coverage: float = Field(1.0, ge=0, le=1)
    max_psi: float = Field(0.25, gt=0)
    min_propensity_std: float = Field(1e-4, ge=0)


class OffersConfig(_Section):
    #: Relative paths are resolved against the folder of the config file that names them.
    catalog_file: str = "offers.yaml"
    campaign_id: str = "cvo"
    control_share: float = Field(0.1, ge=0, lt=1)
    validity_days: int = Field(7, gt=0)
    contact_window_days: int = Field(7, gt=0)
    max_contacts_per_channel: int = Field(3, ge=0)
    cooldown_days_after_reject: int = Field(14, ge=0)
    high_value_min_price_share: float = Field(0.05, ge=0, le=1)
    type_weights: dict[str, float] = Field(default_factory=dict)
    checks: ChecksConfig = ChecksConfig()
    export_format: Literal["csv", "jsonl"] = "jsonl"


class StreamConfig(_Section):
    checkpoint: str = "checkpoints/trigger_offers"
    watermark_minutes: int = Field(60, ge=0)
    suppress_minutes: int = Field(720, ge=0)
    trigger_seconds: int = Field(5, gt=0)
    channel_by_event: dict[str, str] = Field(
        default_factory=lambda: {
            "recharge": "ussd",
            "quota_low": "app",
            "quota_expiring": "sms",
            "package_expired": "sms",
        }
    )


class Config(_Section):
    lake: str = "lake"
    spark: SparkConfig = SparkConfig()
    tables: TablesConfig = TablesConfig()
    mlflow: MlflowConfig = MlflowConfig()
    ingest: IngestConfig = IngestConfig()
    features: FeaturesConfig = FeaturesConfig()
    segments: SegmentsConfig = SegmentsConfig()
    models: ModelsConfig = ModelsConfig()
    offers: OffersConfig = OffersConfig()
    stream: StreamConfig = StreamConfig()

    def with_lake(self, lake: str | None) -> "Config":
        """A copy pointing at another lake root (the CLI's --lake)."""
        return self if lake is None else self.model_copy(update={"lake": lake})



def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    extra = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {where}: {msg}{extra}"


def parse_config(data: dict[str, Any] | None, source: str = "config") -> Config:
    """Validate a mapping into a `Config`; errors name the offending key."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    try:
        return Config.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate a YAML config file (default `conf/local.yaml`)."""
    path = Path(path or "conf/local.yaml")
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    config = parse_config(data, str(path))
    catalog = Path(config.offers.catalog_file)
    if not catalog.is_absolute():
        offers = config.offers.model_copy(update={"catalog_file": str((path.parent / catalog).absolute())})
        config = config.model_copy(update={"offers": offers})
    return config


#: The repository's conf/ folder (used when `cvo` runs outside the repository root).
PACKAGED_CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def default_config_path() -> Path:
    """conf/local.yaml in the working directory, else the one beside the package."""
    local = Path("conf/local.yaml")
    return local if local.exists() else PACKAGED_CONF_DIR / "local.yaml"
