"""Power before launch: the smallest uplift a campaign can detect, and the audience it needs.

Pure Python (no Spark): a campaign planner calls it with a few numbers.

Two-proportion test, two-sided at level alpha, normal approximation without continuity
correction (Fleiss). Base (control) accept rate p0, goal rate p1 = p0 + d, control share
q of the audience, k = n_c / n_t = q / (1 - q). Treatment contacts needed, as if every
contact were independent:

    n_t = ( z_{1-alpha/2} * sqrt(pbar (1 - pbar) (1 + 1/k))
            + z_{power}   * sqrt(p1 (1 - p1) + p0 (1 - p0) / k) )^2 / d^2

with pbar = (p1 + k p0) / (1 + k); with k = 1 this is the textbook per-group
n = (z_a sqrt(2 pbar qbar) + z_b sqrt(p1 q1 + p0 q0))^2 / d^2. All contacts:
n_t (1 + k) = n_t / (1 - q).

Contacts of one subscriber answer alike, and the control group is drawn per subscriber,
so with m contacts per subscriber and intra-subscriber correlation `icc` each contact is
worth less than an independent one: the design effect D = 1 + (m - 1) icc multiplies the
contacts needed, and subscribers = contacts / m. With icc = 1, repeated contacts add
nothing; with icc = 0, m contacts count as m subscribers. When subscribers get different
numbers of contacts (mean m, coefficient of variation cv), the design effect is
1 + (m (1 + cv^2) - 1) icc (Eldridge, Ashby & Kerry 2006): unequal sizes cost power.

The campaigns' intervals (`cvo_spark.measure.campaigns`, method 'clustered') are the
matching analysis: they let the data say how alike a subscriber's contacts are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

#: Default intra-subscriber correlation of acceptances. No universal value exists; 0.1 is
#: on the cautious side of what repeated offers to the same subscriber show (the campaign
#: of benchmarks/bench_clustered_ci.py has 0.09). Estimate it from history where possible.
DEFAULT_ICC = 0.1


def _check(
    control_share: float, base_rate: float, alpha: float, power: float, m: float, icc: float, cv: float
) -> None:
    for name, value in (
        ("control_share", control_share),
        ("base_rate", base_rate),
        ("alpha", alpha),
        ("power", power),
    ):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be strictly between 0 and 1, got {value!r}")
    if m < 1:
        raise ValueError(f"contacts_per_subscriber must be at least 1, got {m!r}")
    if not 0.0 <= icc <= 1.0:
        raise ValueError(f"icc must be between 0 and 1, got {icc!r}")
    if cv < 0:
        raise ValueError(f"contacts_cv must be >= 0, got {cv!r}")


def _subscribers_needed(
    uplift: float,
    control_share: float,
    base_rate: float,
    alpha: float,
    power: float,
    m: float,
    icc: float,
    cv: float,
) -> float:
    """Subscribers (treatment + control) for `uplift`, before rounding up (module docstring)."""
    z_a = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    z_b = NormalDist().inv_cdf(power)
    k = control_share / (1.0 - control_share)
    p0, p1 = base_rate, base_rate + uplift
    pbar = (p1 + k * p0) / (1.0 + k)
    root = z_a * math.sqrt(pbar * (1.0 - pbar) * (1.0 + 1.0 / k)) + z_b * math.sqrt(
        p1 * (1.0 - p1) + p0 * (1.0 - p0) / k
    )
    treatment_contacts = root * root / (uplift * uplift)
    design_effect = 1.0 + (m * (1.0 + cv * cv) - 1.0) * icc
    contacts = treatment_contacts / (1.0 - control_share) * design_effect
    return contacts / m


def required_subscribers(
    uplift: float,
    control_share: float,
    base_rate: float,
    alpha: float = 0.05,
    power: float = 0.8,
    contacts_per_subscriber: float = 1,
    icc: float = DEFAULT_ICC,
    contacts_cv: float = 0.0,
) -> int:
    """Audience (treatment + control subscribers) that detects an absolute `uplift` in accept rate.

    Formula in the module docstring. `uplift` is a difference of rates (0.01 = 1 pp) with
    ``0 < uplift < 1 - base_rate``; `control_share` is drawn per subscriber; `alpha` is
    two-sided; `contacts_per_subscriber` is the mean number of contacts, `contacts_cv` its
    coefficient of variation across subscribers (0: all alike), `icc` the correlation of
    one subscriber's acceptances. The result is rounded up.
    """
    _check(control_share, base_rate, alpha, power, contacts_per_subscriber, icc, contacts_cv)
    if not 0.0 < uplift < 1.0 - base_rate:
        raise ValueError(f"uplift must be between 0 and 1 - base_rate ({1 - base_rate:g}), got {uplift!r}")
    n = _subscribers_needed(
        uplift, control_share, base_rate, alpha, power, contacts_per_subscriber, icc, contacts_cv
    )
    return math.ceil(n - 1e-9)  # a hair under an integer is float noise, not one more subscriber


def minimum_detectable_uplift(
    n_subscribers: int,
    control_share: float,
    base_rate: float,
    alpha: float = 0.05,
    power: float = 0.8,
    contacts_per_subscriber: float = 1,
    icc: float = DEFAULT_ICC,
    contacts_cv: float = 0.0,
) -> float:
    """Smallest absolute uplift in accept rate that `n_subscribers` detect (0.021 = 2.1 pp).

    The inverse of `required_subscribers` (same formula and arguments, solved for the
    uplift by bisection: the audience needed falls as the uplift grows). ``math.inf`` when
    not even an uplift to a 100% accept rate would be detected.
    """
    _check(control_share, base_rate, alpha, power, contacts_per_subscriber, icc, contacts_cv)
    if n_subscribers <= 0:
        raise ValueError(f"n_subscribers must be positive, got {n_subscribers!r}")

    def needed(d: float) -> float:
        return _subscribers_needed(
            d, control_share, base_rate, alpha, power, contacts_per_subscriber, icc, contacts_cv
        )

    low, high = 0.0, 1.0 - base_rate
    if needed(high * (1.0 - 1e-12)) > n_subscribers:
        return math.inf
    for _ in range(200):  # the interval halves each time: far below any meaningful uplift
        mid = (low + high) / 2.0
        if needed(mid) > n_subscribers:
            low = mid
        else:
            high = mid
        if high - low < 1e-12:
            break
    return high


@dataclass(frozen=True)
class PowerCheck:
    """A campaign's power before launch: `underpowered` when its goal is below what it can detect."""

    campaign: str
    n_subscribers: int
    goal_uplift: float
    minimum_detectable_uplift: float
    required_subscribers: int
    underpowered: bool
    message: str


def _pp(value: float, digits: int) -> str:
    return "n/a" if math.isinf(value) else f"{value * 100:.{digits}f} pp"


def check_campaign_power(
    campaign: str,
    n_subscribers: int,
    goal_uplift: float,
    control_share: float,
    base_rate: float,
    alpha: float = 0.05,
    power: float = 0.8,
    contacts_per_subscriber: float = 1,
    icc: float = DEFAULT_ICC,
    contacts_cv: float = 0.0,
) -> PowerCheck:
    """Can a campaign of `n_subscribers` detect its `goal_uplift`? A flag and a one-line message.

    The message reads "campaign X: smallest detectable uplift 2.1 pp > goal 1.0 pp with
    5,000 subscribers (23,456 needed)" when underpowered, with "<=" and no "needed" part
    when not.
    """
    mde = minimum_detectable_uplift(
        n_subscribers, control_share, base_rate, alpha, power, contacts_per_subscriber, icc, contacts_cv
    )
    needed = required_subscribers(
        goal_uplift, control_share, base_rate, alpha, power, contacts_per_subscriber, icc, contacts_cv
    )
    underpowered = mde > goal_uplift
    # One decimal unless that would print the two numbers alike on the wrong side of ">".
    digits = 1 if round(mde * 100, 1) != round(goal_uplift * 100, 1) else 2
    head = f"campaign {campaign}: smallest detectable uplift {_pp(mde, digits)}"
    if underpowered:
        message = (
            f"{head} > goal {_pp(goal_uplift, digits)} with {n_subscribers:,} subscribers ({needed:,} needed)"
        )
    else:
        message = f"{head} <= goal {_pp(goal_uplift, digits)} with {n_subscribers:,} subscribers"
    return PowerCheck(campaign, n_subscribers, goal_uplift, mde, needed, underpowered, message)
