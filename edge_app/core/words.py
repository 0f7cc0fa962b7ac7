"""Words: the decision words (what the till tells the cashier), the answer words (what the
cashier answers), why a sale became an integrity event, why a scan got no check and how an answer
was given, each spelled once, with every label a reader sees for them. Events carry the words; the
cashier window, the feed, the report, the dashboard and the demo show the labels.

All are `StrEnum`s: a member is the plain string on the wire (JSON encodes it as the word), and
a word read back from JSON compares equal to its member, so stored feeds and other tills read alike.
"""

from __future__ import annotations

from enum import StrEnum


class Decision(StrEnum):
    APPROVE = "approve"
    CHECK_ID = "check_id"
    NO_FACE = "no_face"


class Answer(StrEnum):
    ID_CHECKED_OVER_AGE = "id_checked_over_age"
    ID_CHECKED_UNDER_AGE_REFUSED = "id_checked_under_age_refused"
    NO_ID_CHECK = "no_id_check"
    # The answer of a correcting ack that withdraws an earlier one (the cashier pressed Undo): the
    # alert is unanswered again until a new ack for it arrives.
    UNDONE = "undone"


class IntegrityReason(StrEnum):
    """Why a sale on an alert became an integrity event: nobody answered the alert, or the cashier
    answered that no ID was checked."""

    UNANSWERED = "unanswered"
    ANSWERED_NO_ID_CHECK = "answered_no_id_check"


class MissedReason(StrEnum):
    """Why a restricted scan got no check (a `missed` event): too old when it reached the till, too
    many checks already waiting, the service stopping with it still queued, or the check itself
    failing."""

    STALE = "stale"
    QUEUE_FULL = "queue_full"
    SHUTDOWN = "shutdown"
    CHECK_FAILED = "check_failed"


class AckVia(StrEnum):
    """How an ack's answer was given (its `via`): a click or a key on the cashier window, or the
    demo's simulated cashier. Optional on the wire; another display may send a word of its own."""

    CLICK = "click"
    KEY = "key"
    SIMULATED = "simulated"


class PolicyRule(StrEnum):
    """Which rule a check was decided by (its policy's `rule`): the model card's calibrated
    P(age >= challenge age), or the estimate minus a margin."""

    CALIBRATED = "calibrated"
    MARGIN = "margin"


class GateReason(StrEnum):
    """Why the quality gate refused a face (edge_app.vision.faces.gate): the keys of a check's
    `gate_rejections` and the words of its reason ("faces rejected as blurred x2")."""

    TOO_SMALL = "too small"
    BLURRED = "blurred"
    TURNED = "turned sideways"
    TILTED = "tilted up/down"
    TOO_DARK = "too dark"
    TOO_BRIGHT = "too bright"


DECISIONS: tuple[Decision, ...] = tuple(Decision)
# The answers a cashier gives to an alert (Undo is a correction, not an answer).
ACK_ANSWERS: tuple[Answer, ...] = (Answer.ID_CHECKED_OVER_AGE, Answer.ID_CHECKED_UNDER_AGE_REFUSED, Answer.NO_ID_CHECK)
# The answers that say ID was checked: an alert (or a transaction) with one standing is covered.
COVERING_ANSWERS: tuple[Answer, ...] = (Answer.ID_CHECKED_OVER_AGE, Answer.ID_CHECKED_UNDER_AGE_REFUSED)

# -- labels by reader ----------------------------------------------------------------------------
# The feed's live table (short, upper case where the cashier was told to act).
DECISION_SHORT: dict[Decision, str] = {
    Decision.APPROVE: "APPROVE",
    Decision.CHECK_ID: "CHECK ID",
    Decision.NO_FACE: "NO FACE",
}
# The demo's hint to whoever plays the cashier.
DECISION_HINT: dict[Decision, str] = {
    Decision.APPROVE: "OK to sell",
    Decision.CHECK_ID: "ask for ID",
    Decision.NO_FACE: "ask for ID",
}
# The report's per-till table column titles.
DECISION_COLUMN: dict[Decision, str] = {
    Decision.APPROVE: "approve",
    Decision.CHECK_ID: "check ID",
    Decision.NO_FACE: "no face",
}
# The cashier window's buttons and the report's sentences.
ANSWER_LABELS: dict[Answer, str] = {
    Answer.ID_CHECKED_OVER_AGE: "ID checked – over age",
    Answer.ID_CHECKED_UNDER_AGE_REFUSED: "ID checked – under age / refused",
    Answer.NO_ID_CHECK: "No ID check",
    Answer.UNDONE: "Answer undone",
}
# The report's summary sentence ("3 ID checked, over age · ...").
ANSWER_PHRASE: dict[Answer, str] = {
    Answer.ID_CHECKED_OVER_AGE: "ID checked, over age",
    Answer.ID_CHECKED_UNDER_AGE_REFUSED: "ID checked, under age / refused",
    Answer.NO_ID_CHECK: "no ID check",
}
# The feed's live table.
ANSWER_SHORT: dict[Answer, str] = {
    Answer.ID_CHECKED_OVER_AGE: "ID ok, over age",
    Answer.ID_CHECKED_UNDER_AGE_REFUSED: "ID: under/refused",
    Answer.NO_ID_CHECK: "NO ID CHECK",
}
# The report's per-till table column titles.
ANSWER_COLUMN: dict[Answer, str] = {
    Answer.ID_CHECKED_OVER_AGE: "ID ok",
    Answer.ID_CHECKED_UNDER_AGE_REFUSED: "refused",
    Answer.NO_ID_CHECK: "no ID check",
    Answer.UNDONE: "undone",
}
# The feed's and dashboard's integrity rows.
INTEGRITY_REASON_TEXT: dict[IntegrityReason, str] = {
    IntegrityReason.UNANSWERED: "alert not answered",
    IntegrityReason.ANSWERED_NO_ID_CHECK: "cashier answered no ID check",
}
# The demo's console line for an answer.
ACK_VIA_LABELS: dict[AckVia, str] = {
    AckVia.SIMULATED: "simulated cashier",
    AckVia.CLICK: "window, click",
    AckVia.KEY: "window, key",
}
# The dashboard's reason column: why the till decided, in a person's words, e.g. "looked under
# 25: 15% sure over 25" (the calibrated rule's probability) or "looked under 25: estimated 22"
# (the margin rule's estimate). {challenge} is the challenge age of the check's policy.
DECISION_REASON: dict[Decision, str] = {
    Decision.APPROVE: "looked {challenge} or over",
    Decision.CHECK_ID: "looked under {challenge}",
    Decision.NO_FACE: "no usable face seen",
}
REASON_SURE_OVER = "{pct}% sure over {challenge}"
REASON_ESTIMATED = "estimated {age}"
REASON_CAMERA_DOWN = "camera not working: nothing to check"
# Why a restricted scan got no check, for the same column.
MISSED_REASON_TEXT: dict[MissedReason, str] = {
    MissedReason.STALE: "scan too old when it reached the till",
    MissedReason.QUEUE_FULL: "till busy: too many checks waiting",
    MissedReason.SHUTDOWN: "till service stopping",
    MissedReason.CHECK_FAILED: "the check failed",
}
