"""The age bands every report, the dashboard and the evaluation count shoppers in. Kept apart from
the policy (which needs numpy) so the manager's side reads them without the numeric stack."""

from __future__ import annotations

# Bands used in every report, in the evaluation and in training's sampling (whole years, upper
# bound inclusive).
BANDS: tuple[tuple[str, int, int], ...] = (
    ("0-12", 0, 12),
    ("13-17", 13, 17),
    ("18-24", 18, 24),
    ("25-34", 25, 34),
    ("35-49", 35, 49),
    ("50-64", 50, 64),
    ("65+", 65, 10_000),
)

# The minors whose approval the model's figures count, in whole years: the 13-17 band. What
# evaluate, the decision fit, the age-map fit, loso and training call a minor (policy.is_minor).
MINOR_BAND = "13-17"
MINOR_AGES: tuple[int, int] = next((lo, hi) for name, lo, hi in BANDS if name == MINOR_BAND)


def age_band(age: float) -> str:
    a = int(age)  # bands are whole years: 24.9 is still 18-24
    for name, lo, hi in BANDS:
        if lo <= a <= hi:
            return name
    return BANDS[0][0]
