"""What became of an alert, as the report's and the dashboard's charts draw it: the three outcomes
in the order their bars stack, each with its name (the legend's words) and colour, defined once
for both."""

from __future__ import annotations

from edge_app.core.words import ANSWER_PHRASE, Answer

# ID checked, answered "no ID check", not answered: together, every alert.
ALERT_OUTCOME_SERIES: tuple[tuple[str, str], ...] = (
    ("ID checked", "#2e8b57"),
    (f"answered: {ANSWER_PHRASE[Answer.NO_ID_CHECK]}", "#c0392b"),
    ("not answered", "#e67e22"),
)
