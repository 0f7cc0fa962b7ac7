"""Policy: from per-frame age estimates to the cashier's instruction (approve / check_id /
no_face). Pure functions only; thresholds come from PolicyConfig."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Literal, Sequence

from edge_app.config import PolicyConfig

Decision = Literal["approve", "check_id", "no_face"]

# Bands used in every report and in the evaluation (upper bound inclusive).
BANDS: tuple[tuple[str, int, int], ...] = (
    ("0-12", 0, 12),
    ("13-17", 13, 17),
    ("18-24", 18, 24),
    ("25-34", 25, 34),
    ("35-49", 35, 49),
    ("50-64", 50, 64),
    ("65+", 65, 10_000),
)


def age_band(age: float) -> str:
    a = int(age)  # bands are whole years: 24.9 is still 18-24
    for name, lo, hi in BANDS:
        if lo <= a <= hi:
            return name
    return BANDS[0][0]


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


def decide(ages: Sequence[float], cfg: PolicyConfig, min_frames: int = 1) -> PolicyResult:
    """approve only when the aggregated estimate minus its uncertainty is at or above the
    challenge age; otherwise check_id; too few usable frames means no_face (ask for ID too)."""
    if len(ages) < max(1, min_frames):
        return PolicyResult("no_face", None, None, None, None, None, len(ages), cfg.legal_age, cfg.challenge_age,
                            f"{len(ages)} usable face frame(s), need {max(1, min_frames)}")
    age, spread = aggregate(ages)
    unc = spread + cfg.margin_years
    low, high = age - unc, age + unc
    if low >= cfg.challenge_age:
        decision: Decision = "approve"
        reason = f"estimate {age:.1f} - {unc:.1f} >= challenge age {cfg.challenge_age}"
    else:
        decision = "check_id"
        reason = f"estimate {age:.1f} - {unc:.1f} < challenge age {cfg.challenge_age}"
    return PolicyResult(decision, round(age, 1), round(low, 1), round(high, 1), age_band(age), round(spread, 2),
                        len(ages), cfg.legal_age, cfg.challenge_age, reason)
