"""Policy: from per-frame age estimates to the cashier's instruction (approve / check_id /
no_face). Pure functions only; thresholds come from a `ChallengeRule` (the caller builds it
from the policy settings and the item's legal age) and, for a model whose card carries one, from
the card's calibrated decision (`GateRule`).

The calibrated decision: the frames' age distributions (each already the mean of the crop and
its mirror) are averaged; the mass at or over the challenge age is mapped through the card's
monotone calibration to P(shopper >= challenge age); the till approves only when that clears the
card's threshold. The age range shown is the card's calibrated interval (e.g. 80%) of the same
averaged distribution, not the spread between frames.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_app.core.bands import MINOR_AGES, age_band
from edge_app.core.words import Decision

# One frame's age distribution from the model (class k is age k), float32 or float64.
Probs = npt.NDArray[np.floating[Any]]

# Digits of the calibrated probability that a check carries (and is decided on).
P_OVER_DIGITS = 6


def is_minor(ages: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Which of the (real) ages are minors (core.bands.MINOR_AGES): 13 <= age < 18, so 17.5 counts as 17."""
    ages = np.asarray(ages, float)
    return (ages >= MINOR_AGES[0]) & (ages < MINOR_AGES[1] + 1)


@dataclass(frozen=True)
class ChallengeRule:
    """The ages one check is decided against: the item's legal age, the higher challenge age the
    shopper must look (Challenge 25), and the years taken off the estimate under the margin rule."""

    legal_age: int = 18
    challenge_age: int = 25
    margin_years: float = 0.0


@dataclass(frozen=True)
class GateRule:
    """The card's calibrated decision for one challenge age: `raw` -> `calibrated` is a monotone
    map of the distribution's mass at or over the challenge age, fitted on validation; approve
    when the calibrated probability is at least `threshold`."""

    challenge_age: int
    raw: tuple[float, ...]
    calibrated: tuple[float, ...]
    threshold: float


@dataclass(frozen=True)
class DecisionRules:
    """What a model card says about decisions: one GateRule per challenge age it was fitted for,
    and the temperature that makes the distribution's central `interval_level` interval cover
    that share of validation ages."""

    gates: tuple[GateRule, ...]
    interval_level: float = 0.8
    interval_temperature: float = 1.0

    def gate(self, challenge_age: int) -> GateRule | None:
        return next((g for g in self.gates if g.challenge_age == challenge_age), None)


@dataclass(frozen=True)
class PolicyResult:
    decision: Decision
    age: float | None
    age_low: float | None
    age_high: float | None
    age_band: str | None
    spread: float | None
    frames_used: int
    legal_age: int
    challenge_age: int
    reason: str
    p_over: float | None = None  # calibrated P(age >= challenge age); None under the margin rule

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-ready fields (what `agecheck estimate --json` prints)."""
        return dataclasses.asdict(self)


def aggregate(ages: Sequence[float]) -> tuple[float, float]:
    """Median of the frames and their spread (half the inter-quartile range scaled to a
    standard deviation, robust to one bad frame; 0 for a single frame)."""
    med = statistics.median(ages)
    if len(ages) < 2:
        return med, 0.0
    if len(ages) < 4:
        return med, statistics.pstdev(ages)
    q = statistics.quantiles(ages, n=4)
    return med, (q[2] - q[0]) / 1.349


def raw_p_over(probs: Probs, challenge_age: int) -> float:
    """The distribution's mass at or over the challenge age (class k is age k)."""
    return float(np.clip(np.sum(probs[int(challenge_age) :]), 0.0, 1.0))


def calibrated_p_over(probs: Probs, gate: GateRule) -> float:
    return float(np.interp(raw_p_over(probs, gate.challenge_age), gate.raw, gate.calibrated))


def age_interval(probs: Probs, level: float, temperature: float) -> tuple[float, float]:
    """Central `level` interval of the distribution sharpened or widened by `temperature`
    (p ** (1/T), renormalised); ages are the class centres, the cdf is interpolated between."""
    logp = np.log(np.clip(np.asarray(probs, np.float64), 1e-12, None)) / temperature
    q = np.exp(logp - logp.max())
    q /= q.sum()
    cdf = np.cumsum(q)
    ages = np.arange(len(q), dtype=np.float64)
    lo = float(np.interp((1 - level) / 2, cdf, ages))
    hi = float(np.interp((1 + level) / 2, cdf, ages))
    return lo, hi


def _no_face(n: int, min_frames: int, challenge: ChallengeRule) -> PolicyResult:
    return PolicyResult(
        Decision.NO_FACE,
        None,
        None,
        None,
        None,
        None,
        n,
        challenge.legal_age,
        challenge.challenge_age,
        f"{n} usable face frame(s), need {max(1, min_frames)}",
    )


def _verdict(
    ok: bool,
    measured: str,
    bound: str,
    age: float,
    low: float,
    high: float,
    spread: float,
    n: int,
    challenge: ChallengeRule,
    p_over: float | None = None,
) -> PolicyResult:
    """approve when `ok`, else check_id, with the comparison that decided it as the reason."""
    decision = Decision.APPROVE if ok else Decision.CHECK_ID
    return PolicyResult(
        decision,
        round(age, 1),
        round(low, 1),
        round(high, 1),
        age_band(age),
        round(spread, 2),
        n,
        challenge.legal_age,
        challenge.challenge_age,
        f"{measured} {'>=' if ok else '<'} {bound}",
        p_over,
    )


def decide(ages: Sequence[float], challenge: ChallengeRule, min_frames: int = 1) -> PolicyResult:
    """The margin rule, for a model whose card has no calibrated decision: approve only when the
    aggregated estimate minus its uncertainty is at or above the challenge age; otherwise
    check_id; too few usable frames means no_face (ask for ID too)."""
    if len(ages) < max(1, min_frames):
        return _no_face(len(ages), min_frames, challenge)
    age, spread = aggregate(ages)
    unc = spread + challenge.margin_years
    return _verdict(
        age - unc >= challenge.challenge_age,
        f"estimate {age:.1f} - {unc:.1f}",
        f"challenge age {challenge.challenge_age}",
        age,
        age - unc,
        age + unc,
        spread,
        len(ages),
        challenge,
    )


def decide_calibrated(
    ages: Sequence[float],
    probs: Sequence[Probs],
    challenge: ChallengeRule,
    rules: DecisionRules | None,
    min_frames: int = 1,
) -> PolicyResult:
    """The till's decision. When the card has a calibrated rule for this challenge age: approve
    only when P(age >= challenge age), from the frames' averaged distribution, clears the card's
    threshold (policy.margin_years does not apply: the threshold already holds the margin the
    validation data asked for). Otherwise the margin rule (`decide`)."""
    gate = rules.gate(challenge.challenge_age) if rules else None
    if rules is None or gate is None or not probs:
        return decide(ages, challenge, min_frames)
    if len(ages) < max(1, min_frames):
        return _no_face(len(ages), min_frames, challenge)
    age, spread = aggregate(ages)
    mean = np.mean(np.stack([np.asarray(p, np.float64) for p in probs]), axis=0)
    # Decided on the figure that is published, so a record's p_over can always be checked against
    # the card's threshold: faces land exactly on the threshold (a map's flat ends, old cards' steps).
    p = round(calibrated_p_over(mean, gate), P_OVER_DIGITS)
    low, high = age_interval(mean, rules.interval_level, rules.interval_temperature)
    # The interval is of the raw distribution; the shown estimate is the card's mapped age, so
    # the range is widened to contain it rather than shown beside it.
    low, high = min(low, age), max(high, age)
    # A probability that is not a number approves nobody (NaN >= t is false) and is not published.
    return _verdict(
        p >= gate.threshold,
        f"P(age >= {challenge.challenge_age}) {p:.3f}",
        f"threshold {gate.threshold:.3f}",
        age,
        low,
        high,
        spread,
        len(ages),
        challenge,
        p if math.isfinite(p) else None,
    )
