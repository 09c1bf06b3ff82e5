"""Power before launch: the textbook two-proportion numbers by hand, the design effect, the
inverse, the one-line campaign check, and the planned power against the seeded simulation."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from cvo_spark.core.power import check_campaign_power, minimum_detectable_uplift, required_subscribers

Z_A = NormalDist().inv_cdf(0.975)  # 1.959964
Z_B = NormalDist().inv_cdf(0.80)  # 0.841621


def test_equal_groups_match_the_textbook_n():
    # 10% -> 15%, alpha 0.05 two-sided, power 0.8, half control (Fleiss, no continuity
    # correction): pbar = 0.125; n per group = (1.959964 sqrt(2 * .125 * .875)
    # + 0.841621 sqrt(.1 * .9 + .15 * .85))^2 / .05^2 = (0.916689 + 0.392505)^2 / 0.0025
    # = 685.60 -> 1371.19 subscribers in all, 1372 rounded up.
    per_group = (Z_A * math.sqrt(2 * 0.125 * 0.875) + Z_B * math.sqrt(0.1 * 0.9 + 0.15 * 0.85)) ** 2 / 0.05**2
    assert per_group == pytest.approx(685.60, abs=0.01)
    assert required_subscribers(0.05, 0.5, 0.10, contacts_per_subscriber=1) == 1372


def test_unequal_allocation_by_hand():
    # 10% control: k = n_c / n_t = 1/9, pbar = (0.15 + 0.1/9) / (1 + 1/9) = 0.145;
    # n_t = (z_a sqrt(.145 * .855 * 10) + z_b sqrt(.1275 + .09 * 9))^2 / .05^2 = 3593.28,
    # all = n_t / 0.9 = 3992.54 -> 3993. A 10% control costs about three times the audience.
    n_t = (Z_A * math.sqrt(0.145 * 0.855 * 10) + Z_B * math.sqrt(0.1275 + 0.09 * 9)) ** 2 / 0.05**2
    assert n_t / 0.9 == pytest.approx(3992.54, abs=0.01)
    assert required_subscribers(0.05, 0.10, 0.10) == 3993


def test_design_effect_of_repeated_contacts():
    base = 1371.19  # contacts (and subscribers) needed with one contact each
    # 4 contacts each, icc 0.1: D = 1.3, contacts 1782.5, subscribers 445.6 -> 446
    assert required_subscribers(0.05, 0.5, 0.10, contacts_per_subscriber=4, icc=0.1) == math.ceil(
        base * 1.3 / 4
    )
    # icc 1: repeated contacts add nothing, as many subscribers as with one contact
    assert required_subscribers(0.05, 0.5, 0.10, contacts_per_subscriber=4, icc=1.0) == 1372
    # icc 0: four contacts are worth four subscribers
    assert required_subscribers(0.05, 0.5, 0.10, contacts_per_subscriber=4, icc=0.0) == math.ceil(base / 4)
    # unequal numbers of contacts cost power: cv 0.5 -> D = 1 + (4 * 1.25 - 1) * 0.1 = 1.4
    assert required_subscribers(
        0.05, 0.5, 0.10, contacts_per_subscriber=4, icc=0.1, contacts_cv=0.5
    ) == math.ceil(base * 1.4 / 4)


def test_minimum_detectable_uplift_inverts_the_audience():
    mde = minimum_detectable_uplift(1372, 0.5, 0.10, contacts_per_subscriber=1)
    assert 0.0499 < mde <= 0.05  # 1372 is a little more than the 1371.19 that 5 pp need
    assert required_subscribers(mde, 0.5, 0.10, contacts_per_subscriber=1) <= 1372
    assert required_subscribers(mde * 0.99, 0.5, 0.10, contacts_per_subscriber=1) > 1372
    # large audience, small uplift: the familiar (z_a + z_b) * se of the difference
    n, q = 1_000_000, 0.1
    approx = (Z_A + Z_B) * math.sqrt(0.09 * (1 / (n * (1 - q)) + 1 / (n * q)))
    assert minimum_detectable_uplift(n, q, 0.10, icc=0.0) == pytest.approx(approx, rel=0.02)
    # smaller with more subscribers, larger with more correlated contacts
    assert minimum_detectable_uplift(20_000, 0.1, 0.1) < minimum_detectable_uplift(5_000, 0.1, 0.1)
    correlated = minimum_detectable_uplift(5_000, 0.1, 0.1, contacts_per_subscriber=4, icc=0.3)
    assert correlated > minimum_detectable_uplift(5_000, 0.1, 0.1, contacts_per_subscriber=4, icc=0.05)
    assert minimum_detectable_uplift(3, 0.5, 0.10) == math.inf


def test_campaign_check_flag_and_message():
    small = check_campaign_power("recharge_bonus", 2_000, 0.01, control_share=0.1, base_rate=0.1)
    assert small.underpowered
    assert small.minimum_detectable_uplift == pytest.approx(minimum_detectable_uplift(2_000, 0.1, 0.1))
    assert small.message == (
        f"campaign recharge_bonus: smallest detectable uplift {small.minimum_detectable_uplift * 100:.1f} pp "
        f"> goal 1.0 pp with 2,000 subscribers ({small.required_subscribers:,} needed)"
    )
    assert small.required_subscribers == required_subscribers(0.01, 0.1, 0.1)
    big = check_campaign_power("recharge_bonus", 200_000, 0.01, control_share=0.1, base_rate=0.1)
    assert not big.underpowered
    assert big.message.startswith("campaign recharge_bonus: smallest detectable uplift 0.")
    assert big.message.endswith("pp <= goal 1.0 pp with 200,000 subscribers")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="control_share"):
        required_subscribers(0.01, 0.0, 0.1)
    with pytest.raises(ValueError, match="uplift"):
        required_subscribers(0.95, 0.1, 0.1)
    with pytest.raises(ValueError, match="icc"):
        minimum_detectable_uplift(1_000, 0.1, 0.1, icc=1.5)
    with pytest.raises(ValueError, match="n_subscribers"):
        minimum_detectable_uplift(0, 0.1, 0.1)


def test_planned_power_holds_in_the_seeded_simulation():
    # The campaign of benchmarks/bench_clustered_ci.py (2,000 subscribers, 10% control,
    # 1..8 contacts, accept probability 0.9 * Beta(1, 8)): planted at the minimum detectable
    # uplift, the clustered interval should exclude 0 in about 80% of campaigns.
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_clustered_ci.py"
    spec = importlib.util.spec_from_file_location("bench_clustered_ci", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    a, b, scale = bench.BETA_A, bench.BETA_B, bench.P_SCALE
    mean = scale * a / (a + b)
    icc = scale**2 * a * b / ((a + b) ** 2 * (a + b + 1)) / (mean * (1 - mean))  # control group's
    contacts = np.arange(1, 9)
    cv = contacts.std() / contacts.mean()
    mde = minimum_detectable_uplift(2_000, 0.1, mean, 0.05, 0.8, contacts.mean(), icc, cv)
    detected = [
        bench.replicate(np.random.default_rng([11, r]), 2_000, 0.1, mde, 8, Z_A)["uplift_clustered"][0] > 0
        for r in range(500)
    ]
    assert 0.75 <= np.mean(detected) <= 0.90, (mde, np.mean(detected))
