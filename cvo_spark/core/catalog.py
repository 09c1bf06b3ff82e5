"""The offer catalog: load `conf/offers.yaml` into frozen, typed objects, and as DataFrames.

The catalog is data (DESIGN: "the offer catalog is data in conf/, not code"): offers with
their type, category, price, unit cost, validity, channels and eligibility, and the
channels with their slot counts. Loading validates everything at once; a bad catalog
stops with one `ConfigError` line naming the key, e.g.
``conf/offers.yaml: offers[3] (VOICE_BUNDLE_100).channels: unknown channel 'fax'; known: sms, ...``.

The catalog is small (tens of offers), so it reaches Spark as a tiny DataFrame built on
the driver (`offers_frame`, `offer_channels_frame`) that the offers transforms broadcast.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import ArrayType, DoubleType, IntegerType, StringType, StructField, StructType

from cvo_spark.core.config import Config
from cvo_spark.core.errors import ConfigError
from cvo_spark.core.rules import PAYMENT_TYPES, Eligibility, known_value
from cvo_spark.core.schemas import PRODUCT_CATEGORIES, SUBSCRIBER_CHANNELS

#: Push channels send a message the subscriber did not ask for (a contact: costs, caps,
#: consent, quiet hours); pull channels show slots when the subscriber comes (app, shops).
CHANNEL_KINDS: tuple[str, ...] = ("push", "pull")
DEFAULT_CHANNEL_KIND: dict[str, str] = {
    "sms": "push",
    "ussd": "push",
    "call_centre": "push",
    "app": "pull",
    "ecommerce": "pull",
    "banking": "pull",
    "retail": "pull",
}

#: Offer types and the model score each one is driven by (see cvo_spark/offers/engine.py).
OFFER_TYPES: tuple[str, ...] = ("upsell", "cross_sell", "retention", "loyalty")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_known = known_value


class Offer(_Frozen):
    """One catalog offer. `validity_days` None means the config's default validity."""

    offer_id: str = Field(pattern=r"^[A-Z0-9_]+$")
    offer_type: str
    category: str
    price: float = Field(gt=0)
    unit_cost: float = Field(ge=0)
    validity_days: int | None = Field(None, gt=0)
    channels: tuple[str, ...] = Field(min_length=1)
    eligibility: Eligibility = Eligibility()
    description: str = ""
    #: Paid to (or given up for) every acceptor, incremental or not: a bonus, a discount.
    incentive: float = Field(0.0, ge=0)
    #: Price of the regular pack this offer can displace (null: it displaces nothing).
    regular_price: float | None = Field(None, gt=0)
    #: Treatment decisions per run (day): at least / at most.
    min_daily_volume: int | None = Field(None, ge=0)
    max_daily_volume: int | None = Field(None, ge=0)

    @field_validator("offer_type")
    @classmethod
    def _offer_type(cls, value: str) -> str:
        return _known(value, OFFER_TYPES, "offer type")

    @field_validator("category")
    @classmethod
    def _category(cls, value: str) -> str:
        return _known(value, PRODUCT_CATEGORIES, "category")

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for v in value:
            _known(v, SUBSCRIBER_CHANNELS, "channel")
        if len(set(value)) != len(value):
            raise ValueError("a channel is listed twice")
        return value

    @model_validator(mode="after")
    def _margin(self) -> Offer:
        # Only a retention offer may sell at or below cost: it pays back in saved lifetime value.
        if self.offer_type != "retention" and self.unit_cost >= self.price:
            raise ValueError(f"unit_cost {self.unit_cost:g} is not below price {self.price:g} (no margin)")
        low, high = self.min_daily_volume, self.max_daily_volume
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_daily_volume {low} > max_daily_volume {high}")
        return self

    @property
    def margin(self) -> float:
        return self.price - self.unit_cost


class ChannelSpec(_Frozen):
    """A channel: slots a subscriber sees, push or pull, cost per contact, daily capacity."""

    slots: int = Field(gt=0)
    #: None: the channel's usual kind (DEFAULT_CHANNEL_KIND).
    kind: str | None = None
    #: Rupiah per contact (one message to one subscriber, however many slots it shows).
    contact_cost: float = Field(0.0, ge=0)
    #: Contacts (subscribers reached) per run (day); None: unlimited.
    daily_capacity: int | None = Field(None, ge=0)

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str | None) -> str | None:
        return None if value is None else _known(value, CHANNEL_KINDS, "channel kind")


class Budget(_Frozen):
    """An incentive budget over a campaign's dates, spread evenly over its days (paced).

    Spend is the incentive of every acceptance of its offers from `start` on; each day
    may commit (remaining amount) / (days left, today included) in expected incentive.
    """

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    amount: float = Field(gt=0)
    start: date
    end: date
    #: None: every offer in the catalog.
    offers: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _dates(self) -> Budget:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


class Catalog(_Frozen):
    """The whole catalog: channels (name -> slots) and offers, cross-checked."""

    channels: dict[str, ChannelSpec] = Field(min_length=1)
    offers: tuple[Offer, ...] = Field(min_length=1)
    budgets: tuple[Budget, ...] = ()

    @field_validator("channels")
    @classmethod
    def _channel_names(cls, value: dict[str, ChannelSpec]) -> dict[str, ChannelSpec]:
        for name in value:
            _known(name, SUBSCRIBER_CHANNELS, "channel")
        return value

    @model_validator(mode="after")
    def _cross_check(self) -> Catalog:
        seen: set[str] = set()
        for i, offer in enumerate(self.offers):
            where = f"offers[{i}] ({offer.offer_id})"
            if offer.offer_id in seen:
                raise ValueError(f"{where}.offer_id: duplicate offer_id {offer.offer_id}")
            seen.add(offer.offer_id)
            for ch in offer.channels:
                if ch not in self.channels:
                    raise ValueError(
                        f"{where}.channels: channel {ch!r} has no entry under channels: "
                        f"(defined: {', '.join(self.channels)})"
                    )
        names: set[str] = set()
        for i, budget in enumerate(self.budgets):
            if budget.name in names:
                raise ValueError(f"budgets[{i}].name: duplicate budget name {budget.name}")
            names.add(budget.name)
            for offer_id in budget.offers or ():
                if offer_id not in seen:
                    raise ValueError(f"budgets[{i}] ({budget.name}).offers: unknown offer_id {offer_id}")
        return self

    def kind(self, channel: str) -> str:
        """'push' or 'pull' for a channel of this catalog."""
        return self.channels[channel].kind or DEFAULT_CHANNEL_KIND.get(channel, "push")

    def budget_offers(self, budget: Budget) -> tuple[str, ...]:
        return budget.offers if budget.offers is not None else self.offer_ids

    def offer(self, offer_id: str) -> Offer:
        for o in self.offers:
            if o.offer_id == offer_id:
                return o
        raise KeyError(offer_id)

    @property
    def offer_ids(self) -> tuple[str, ...]:
        return tuple(o.offer_id for o in self.offers)


# ---------------------------------------------------------------------------- loading
def _where(loc: tuple[Any, ...], data: Any) -> str:
    """Pydantic's error location as `offers[3] (OFFER_ID).channels`."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            node = node[item] if isinstance(node, list) and item < len(node) else None
            if isinstance(node, dict) and node.get("offer_id"):
                label += f" ({node['offer_id']})"
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts)


def parse_catalog(data: Any, source: str = "offers.yaml") -> Catalog:
    """Validate a mapping into a `Catalog`; errors are one line naming the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping with channels: and offers:")
    try:
        return Catalog.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = _where(tuple(first["loc"]), data)
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        msg = msg.removeprefix("Value error, ")
        text = f"{where}: {msg}" if where else msg
        raise ConfigError(f"{source}: {text}") from None


def resolve_catalog_path(catalog_file: str, base_dir: Path) -> Path:
    """Where the catalog file is: absolute as given, else under `base_dir`, `base_dir/conf`
    or the repository's `conf/` (the first that exists)."""
    path = Path(catalog_file)
    if path.is_absolute():
        return path
    repo_conf = Path(__file__).resolve().parents[2] / "conf"
    for candidate in (base_dir / path, base_dir / "conf" / path, repo_conf / path, repo_conf / path.name):
        if candidate.exists():
            return candidate
    return base_dir / path


def load_catalog(path: str | Path) -> Catalog:
    """Load and validate the YAML catalog at `path`; a missing file or bad key is a `ConfigError`."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"offers.catalog_file: catalog not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    return parse_catalog(data, str(path))


def _check_rule_names(rule: Eligibility, known: Mapping[str, tuple[str, ...]], where: str) -> None:
    for key, names in known.items():
        for name in getattr(rule, key) or ():
            if name not in names:
                raise ConfigError(f"{where}.{key}: unknown name {name!r}; known: {', '.join(names)}")


def check_catalog_names(
    catalog: Catalog,
    value_tiers: Iterable[str],
    personas: Iterable[str],
    lifecycles: Iterable[str],
    source: str = "offers.yaml",
) -> None:
    """Check eligibility names against the segment config (tier ladder, persona naming
    rules, lifecycle names): a typo would silently make an offer unreachable."""
    known = {"value_tiers": tuple(value_tiers), "personas": tuple(personas), "lifecycle": tuple(lifecycles)}
    for i, offer in enumerate(catalog.offers):
        _check_rule_names(offer.eligibility, known, f"{source}: offers[{i}] ({offer.offer_id}).eligibility")


def check_campaigns(
    catalog: Catalog,
    campaigns: Iterable[Any],
    value_tiers: Iterable[str],
    personas: Iterable[str],
    lifecycles: Iterable[str],
) -> None:
    """Campaigns (config ``offers.campaigns``) against the catalog and segment config: every
    offer in the catalog, every audience name known, no budget name taken twice."""
    known = {"value_tiers": tuple(value_tiers), "personas": tuple(personas), "lifecycle": tuple(lifecycles)}
    budgets = {b.name for b in catalog.budgets}
    for i, c in enumerate(campaigns):
        where = f"offers.campaigns[{i}] ({c.id})"
        for offer_id in c.offers:
            if offer_id not in catalog.offer_ids:
                raise ConfigError(f"{where}.offers: unknown offer_id {offer_id!r} (not in the catalog)")
        _check_rule_names(c.audience, known, f"{where}.audience")
        if c.budget is not None and campaign_budget_name(c.id) in budgets:
            raise ConfigError(
                f"{where}.budget: the catalog already has a budget named {campaign_budget_name(c.id)!r}"
            )


def campaign_budget_name(campaign_id: str) -> str:
    """The name a campaign's budget takes among the catalog's budgets."""
    return f"campaign_{campaign_id}"


def check_type_weights(type_weights: dict[str, float]) -> None:
    """`offers.type_weights` keys must be offer types and the weights non-negative."""
    for key, weight in type_weights.items():
        if key not in OFFER_TYPES:
            raise ConfigError(
                f"offers.type_weights.{key}: unknown offer type; known: {', '.join(OFFER_TYPES)}"
            )
        if weight < 0:
            raise ConfigError(f"offers.type_weights.{key}: weight must be >= 0, got {weight}")


# ---------------------------------------------------------------------------- frames
_S, _D, _I = StringType(), DoubleType(), IntegerType()
OFFERS_FRAME_SCHEMA = StructType(
    [
        StructField("offer_id", _S, False),
        StructField("offer_type", _S, False),
        StructField("category", _S, False),
        StructField("price", _D, False),
        StructField("unit_cost", _D, False),
        StructField("validity_days", _I, False),
        StructField("elig_value_tiers", ArrayType(_S)),
        StructField("elig_personas", ArrayType(_S)),
        StructField("elig_lifecycle", ArrayType(_S)),
        StructField("elig_payment_types", ArrayType(_S)),
        StructField("elig_min_arpu_3m", _D),
        StructField("elig_max_arpu_3m", _D),
        StructField("elig_min_tenure_days", _I),
        StructField("elig_max_tenure_days", _I),
        StructField("incentive", _D, False),
        StructField("regular_price", _D),
        # The campaign the offer runs in today and its control share (null: the defaults).
        StructField("campaign_id", _S),
        StructField("control_share", _D),
    ]
)
OFFER_CHANNELS_SCHEMA = StructType(
    [
        StructField("offer_id", _S, False),
        StructField("channel", _S, False),
        StructField("slots", _I, False),
        StructField("channel_kind", _S, False),
        StructField("contact_cost", _D, False),
    ]
)


def _list(value: tuple[str, ...] | None) -> list[str] | None:
    return list(value) if value is not None else None


def offers_frame(
    spark: SparkSession,
    catalog: Catalog,
    default_validity_days: int,
    campaigns: Mapping[str, tuple[str, float]] | None = None,
) -> DataFrame:
    """One row per offer: id, type, category, price, unit_cost, validity_days, the
    eligibility rules as `elig_*` columns (null = no restriction) and, from `campaigns`
    (offer_id -> (campaign_id, control_share), `cvo_spark.offers.campaigns.run_catalog`),
    the campaign it runs in (null: the default campaign of the offer params)."""
    rows = []
    for o in catalog.offers:
        e = o.eligibility
        campaign_id, control_share = (campaigns or {}).get(o.offer_id, (None, None))
        rows.append(
            (
                o.offer_id,
                o.offer_type,
                o.category,
                float(o.price),
                float(o.unit_cost),
                int(o.validity_days or default_validity_days),
                _list(e.value_tiers),
                _list(e.personas),
                _list(e.lifecycle),
                _list(e.payment_types),
                None if e.min_arpu_3m is None else float(e.min_arpu_3m),
                None if e.max_arpu_3m is None else float(e.max_arpu_3m),
                e.min_tenure_days,
                e.max_tenure_days,
                float(o.incentive),
                None if o.regular_price is None else float(o.regular_price),
                campaign_id,
                None if control_share is None else float(control_share),
            )
        )
    return spark.createDataFrame(rows, OFFERS_FRAME_SCHEMA)


def offer_channels_frame(spark: SparkSession, catalog: Catalog) -> DataFrame:
    """One row per (offer, channel it may go out on) with the channel's slot count, kind
    ('push'/'pull') and cost per contact."""
    rows = [
        (
            o.offer_id,
            ch,
            catalog.channels[ch].slots,
            catalog.kind(ch),
            float(catalog.channels[ch].contact_cost),
        )
        for o in catalog.offers
        for ch in o.channels
    ]
    return spark.createDataFrame(rows, OFFER_CHANNELS_SCHEMA)


__all__ = [
    "CHANNEL_KINDS",
    "OFFER_TYPES",
    "PAYMENT_TYPES",
    "Budget",
    "Catalog",
    "ChannelSpec",
    "Eligibility",
    "Offer",
    "campaign_budget_name",
    "check_campaigns",
    "check_catalog_names",
    "check_type_weights",
    "load_catalog",
    "offer_channels_frame",
    "offers_frame",
    "parse_catalog",
    "resolve_catalog_path",
]


def load_checked_catalog(config: Config) -> Catalog:
    """The catalog of `config`, with eligibility names checked against the segment config."""
    # load_config makes a relative catalog_file absolute (next to the YAML); a parsed
    # mapping may leave it relative: then the working directory or the repo's conf/.
    path = resolve_catalog_path(config.offers.catalog_file, Path.cwd())
    catalog = load_catalog(path)
    seg = config.segments
    names = {
        "value_tiers": [t.name for t in seg.value_tiers.ladder] + [seg.value_tiers.high_value_name],
        "personas": [r.name for r in seg.personas.naming],
        "lifecycles": [seg.lifecycle.new_name, seg.lifecycle.base_name],
    }
    check_catalog_names(catalog, **names, source=str(path))
    check_campaigns(catalog, config.offers.campaigns, **names)
    check_type_weights(config.offers.type_weights)
    return catalog
