"""Config loads into typed objects; a bad key or value is an error that names it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cvo_spark.core.config import Config, load_config, parse_config
from cvo_spark.core.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_local_yaml_loads_with_business_defaults():
    config = load_config(REPO / "conf" / "local.yaml")
    assert isinstance(config, Config)
    tiers = config.segments.value_tiers
    assert tiers.high_value_min_los_days == 180
    assert tiers.high_value_min_arpu_3m == 100_000
    assert config.segments.lifecycle.new_max_days == 90
    # relative catalog path is resolved beside the config file
    assert Path(config.offers.catalog_file) == (REPO / "conf" / "offers.yaml").absolute()


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"spark": {"shuffle_partitons": 4}}, "spark.shuffle_partitons: unknown key"),
        ({"features": {"windows": {"arpu_long_days": -30}}}, "features.windows.arpu_long_days"),
        ({"segments": {"personas": {"k_min": 6, "k_max": 3}}}, "k range is empty"),
        ({"offers": {"control_share": 1.5}}, "offers.control_share"),
        ({"models": {"auc_ceiling": "high"}}, "models.auc_ceiling"),
        ({"ingest": {"earliest_event_date": "long ago"}}, "ingest.earliest_event_date"),
        (
            {"models": {"horizon_days": 30, "inactive_days": 45}},
            "inactive_days (45) must be <= horizon_days (30)",
        ),
        ({"lakee": "x"}, "lakee: unknown key"),
    ],
)
def test_bad_key_or_value_names_it(data, named):
    with pytest.raises(ConfigError) as err:
        parse_config(data, "test.yaml")
    assert named in str(err.value)
    assert str(err.value).startswith("test.yaml: ")
    assert "\n" not in str(err.value)


def test_config_is_frozen():
    config = parse_config({})
    with pytest.raises(ValidationError):
        config.lake = "elsewhere"  # type: ignore[misc]


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spark: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(scalar)


def test_cluster_yaml_validates():
    path = REPO / "conf" / "cluster.yaml"
    if path.exists():
        config = load_config(path)
        assert "." in config.tables.gold  # catalog schema


def test_xgboost_engine_without_the_package_names_the_key(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "xgboost" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"models: .*engine 'xgboost' needs the xgboost package"):
        parse_config({"models": {"engine": "xgboost"}}, "test.yaml")
    assert parse_config({"models": {"engine": "mllib"}}).models.engine == "mllib"
    with pytest.raises(ConfigError, match="models.engine"):
        parse_config({"models": {"engine": "lightgbm"}}, "test.yaml")


def test_parameter_objects_take_their_defaults_from_the_config():
    """Issue 17: no business default written twice. A parameter object built from the
    default config equals the bare one, except what only a config and catalog can say."""
    import dataclasses

    from cvo_spark.core.catalog import load_catalog
    from cvo_spark.models.uplift import UpliftParams
    from cvo_spark.models.uplift_stage import uplift_params
    from cvo_spark.offers.allocation import AllocationParams
    from cvo_spark.offers.campaigns import PowerSettings
    from cvo_spark.offers.engine import OfferParams
    from cvo_spark.offers.stage import allocation_params, offer_params, power_settings

    config = parse_config({}, "defaults")
    catalog = load_catalog(Path(__file__).resolve().parents[1] / "conf" / "offers.yaml")
    catalog_or_config_only = {"universal_holdout_share", "push_channels", "consent_when_missing"}
    for built, bare in [
        (offer_params(config, catalog), OfferParams()),
        (allocation_params(config), AllocationParams()),
        (power_settings(config), PowerSettings()),
        (uplift_params(config), UpliftParams()),
    ]:
        differ = {
            f.name
            for f in dataclasses.fields(bare)
            if getattr(built, f.name) != getattr(bare, f.name) and f.name not in catalog_or_config_only
        }
        assert differ == set(), f"{type(bare).__name__}: {sorted(differ)} written twice and apart"
