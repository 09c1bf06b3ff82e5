"""The offer catalog: the shipped conf/offers.yaml, validation errors that name the key, frames."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from cvo_spark.core.catalog import (
    check_catalog_names,
    check_type_weights,
    load_catalog,
    offer_channels_frame,
    offers_frame,
    parse_catalog,
    resolve_catalog_path,
)
from cvo_spark.core.errors import ConfigError
from cvo_spark.core.schemas import SUBSCRIBER_CHANNELS

REPO_CATALOG = Path(__file__).resolve().parents[1] / "conf" / "offers.yaml"
REQUIRED_OFFERS = {
    "DATA_BOOST_5GB",
    "DATA_NIGHT_10GB",
    "DATA_WEEKLY_2GB",
    "VOICE_BUNDLE_100",
    "VOICE_ONNET_UNL",
    "SMS_PACK_200",
    "DIGITAL_VIDEO_30D",
    "DIGITAL_MUSIC_30D",
    "DIGITAL_GAMES_7D",
    "COMBO_STARTER",
    "COMBO_PLUS",
    "COMBO_PREMIUM",
    "RETENTION_BONUS_DATA",
    "RETENTION_DISCOUNT_20",
    "LOYALTY_POINTS_X2",
    "NEWBIE_WELCOME_1GB",
}


def small() -> dict:
    return {
        "channels": {"sms": {"slots": 1}, "app": {"slots": 2}},
        "offers": [
            {
                "offer_id": "A_UP",
                "offer_type": "upsell",
                "category": "data",
                "price": 20000,
                "unit_cost": 5000,
                "channels": ["sms", "app"],
            },
            {
                "offer_id": "B_RET",
                "offer_type": "retention",
                "category": "bundle",
                "price": 10000,
                "unit_cost": 12000,
                "validity_days": 14,
                "channels": ["app"],
                "eligibility": {"value_tiers": ["Gold"], "min_arpu_3m": 50000, "max_tenure_days": 400},
            },
        ],
    }


def refused(data: dict) -> str:
    with pytest.raises(ConfigError) as err:
        parse_catalog(data, "offers.yaml")
    return str(err.value)


def test_shipped_catalog_has_the_required_offers_channels_and_prices():
    catalog = load_catalog(REPO_CATALOG)
    assert set(catalog.offer_ids) >= REQUIRED_OFFERS
    assert {c: s.slots for c, s in catalog.channels.items()} == {
        "sms": 1,
        "ussd": 3,
        "ecommerce": 4,
        "app": 6,
        "banking": 3,
    }
    assert set(catalog.channels) <= set(SUBSCRIBER_CHANNELS)
    assert all(5_000 <= o.price <= 150_000 for o in catalog.offers)
    assert {o.offer_type for o in catalog.offers} == {"upsell", "cross_sell", "retention", "loyalty"}
    # The shipped eligibility names exist in the default segment config.
    check_catalog_names(
        catalog,
        ["Priority", "Gold", "Mass", "High Value"],
        ["Legacy Active", "Digital Active", "Socially Active", "Traditional Active"],
        ["new", "base"],
    )


def test_unknown_channel_is_named_with_its_offer():
    data = small()
    data["offers"][0]["channels"] = ["sms", "fax"]
    assert refused(data).startswith(
        "offers.yaml: offers[0] (A_UP).channels: unknown channel 'fax'; known: sms,"
    )


def test_unknown_channel_in_the_channels_section_is_named():
    data = small()
    data["channels"]["pigeon"] = {"slots": 1}
    assert "channels: unknown channel 'pigeon'" in refused(data)


def test_negative_price_names_the_key():
    data = small()
    data["offers"][1]["price"] = -5
    assert refused(data) == "offers.yaml: offers[1] (B_RET).price: Input should be greater than 0"


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (
            lambda d: d["offers"][0].update(offer_type="upsale"),
            "offers[0] (A_UP).offer_type: unknown offer type 'upsale'",
        ),
        (
            lambda d: d["offers"][0].update(category="food"),
            "offers[0] (A_UP).category: unknown category 'food'",
        ),
        (
            lambda d: d["offers"][0].update(unit_cost=25000),
            "offers[0] (A_UP): unit_cost 25000 is not below price",
        ),
        (
            lambda d: d["offers"][1]["eligibility"].update(colour="red"),
            "offers[1] (B_RET).eligibility.colour: unknown key",
        ),
        (
            lambda d: d["offers"][1]["eligibility"].update(max_arpu_3m=10),
            "min_arpu_3m 50000.0 > max_arpu_3m 10.0",
        ),
        (
            lambda d: d["offers"][1]["eligibility"].update(payment_types=["cash"]),
            "unknown payment type 'cash'",
        ),
        (
            lambda d: d["offers"].append(copy.deepcopy(d["offers"][0])),
            "offers[2] (A_UP).offer_id: duplicate offer_id",
        ),
        (
            lambda d: d["channels"].pop("app"),
            "offers[0] (A_UP).channels: channel 'app' has no entry under channels:",
        ),
        (
            lambda d: d["channels"]["sms"].update(slots=0),
            "channels.sms.slots: Input should be greater than 0",
        ),
    ],
)
def test_bad_catalogs_name_the_key(mutate, expected):
    data = small()
    mutate(data)
    assert expected in refused(data)


def test_retention_offer_may_sell_below_cost_and_margin_is_price_minus_cost():
    catalog = parse_catalog(small())
    assert catalog.offer("B_RET").margin == -2000.0
    assert catalog.offer("A_UP").margin == 15000.0


def test_names_are_checked_against_the_segment_config():
    catalog = parse_catalog(small())
    with pytest.raises(
        ConfigError, match=r"offers\[1\] \(B_RET\)\.eligibility\.value_tiers: unknown name 'Gold'"
    ):
        check_catalog_names(catalog, ["Priority", "Mass"], [], ["new", "base"])


def test_type_weights_keys_must_be_offer_types():
    check_type_weights({"upsell": 1.5, "retention": 0.5})
    with pytest.raises(ConfigError, match=r"offers\.type_weights\.upsel: unknown offer type"):
        check_type_weights({"upsel": 1.0})
    with pytest.raises(ConfigError, match=r"offers\.type_weights\.loyalty: weight must be >= 0"):
        check_type_weights({"loyalty": -1.0})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="catalog not found"):
        load_catalog(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("channels: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_catalog(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_catalog(listed)


def test_catalog_path_resolution(tmp_path):
    assert resolve_catalog_path("offers.yaml", tmp_path) == REPO_CATALOG  # local.yaml's relative name
    assert resolve_catalog_path("conf/offers.yaml", tmp_path) == REPO_CATALOG
    own = tmp_path / "mine.yaml"
    own.write_text("x")
    assert resolve_catalog_path("mine.yaml", tmp_path) == own
    assert resolve_catalog_path(str(own), Path("/elsewhere")) == own


def test_catalog_frames(spark):
    catalog = parse_catalog(small())
    offers = {r["offer_id"]: r for r in offers_frame(spark, catalog, default_validity_days=7).collect()}
    assert offers["A_UP"]["validity_days"] == 7  # the config default fills an omitted validity
    assert offers["A_UP"]["elig_value_tiers"] is None and offers["A_UP"]["elig_min_arpu_3m"] is None
    assert offers["B_RET"]["validity_days"] == 14
    assert offers["B_RET"]["elig_value_tiers"] == ["Gold"]
    assert offers["B_RET"]["elig_min_arpu_3m"] == 50000.0 and offers["B_RET"]["elig_max_tenure_days"] == 400
    channels = sorted(
        (r["offer_id"], r["channel"], r["slots"]) for r in offer_channels_frame(spark, catalog).collect()
    )
    assert channels == [("A_UP", "app", 2), ("A_UP", "sms", 1), ("B_RET", "app", 2)]
