"""Banner model: what the cashier window shows, as pure functions and small classes with no Tk in
them, so every word, colour and rule here is tested without a screen.

It owns:

* `banner_for` - from a check (and its alert) to a `Banner`: the instruction first ("ASK FOR ID",
  "OK — no ID needed", "NO FACE SEEN — ASK FOR ID", "CAMERA DOWN — ASK FOR ID"), a symbol that
  carries the meaning without colour (✓ ✗ ? !), colours with a contrast of at least 4.5:1, and
  the camera's estimate second, as a range ("about 17–26": the model's calibrated interval when
  the check has one, else the age band) rather than an age that reads as exact;
* `recorded_banner` - what is shown after an answer, while Undo is offered;
* `AlertQueue` - the unanswered alerts: the newest is shown, the others wait with a visible
  count, each stays until answered (here or on another display) or until it expires.

Privacy: only the numbers and words of the events; nothing visual comes in or goes out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from edge_app.core.event_parts import Product
from edge_app.core.events import AlertEvent, CheckEvent
from edge_app.core.words import ANSWER_LABELS, Answer, Decision


class BannerKind(StrEnum):
    """What the banner tells the cashier. A banner's own words, not the till's decisions: an
    approval reads "ok", a check_id "ask_id"; a no-face check is the decision's own word (and
    becomes CAMERA_DOWN when the camera was not up)."""

    OK = "ok"
    ASK_ID = "ask_id"
    NO_FACE = Decision.NO_FACE.value
    CAMERA_DOWN = "camera_down"
    RECORDED = "recorded"  # an answer was recorded (Undo is offered)
    NOTICE = "notice"  # about the window itself, e.g. it hears nothing from its till


# The banners that wait for the cashier's answer.
ANSWERABLE: frozenset[BannerKind] = frozenset({BannerKind.ASK_ID, BannerKind.NO_FACE, BannerKind.CAMERA_DOWN})


@dataclass(frozen=True)
class Style:
    bg: str
    fg: str
    symbol: str


# The symbol says the same as the colour for a reader who cannot tell red from green. Every pair
# is at least 4.5:1 (WCAG AA for normal text; the banner text is far larger): see contrast().
STYLES: dict[BannerKind, Style] = {
    BannerKind.OK: Style("#0b7a2e", "#ffffff", "✓"),
    BannerKind.ASK_ID: Style("#c8102e", "#ffffff", "✗"),
    BannerKind.NO_FACE: Style("#ffb000", "#111111", "?"),
    # Dark blue: apart from the amber of NO FACE in hue and in lightness, so a camera fault is
    # not read as a shopper who looked away.
    BannerKind.CAMERA_DOWN: Style("#1d3f8f", "#ffffff", "!"),
    BannerKind.RECORDED: Style("#2e2e2e", "#ffffff", "✓"),
    BannerKind.NOTICE: Style("#151515", "#ffd24a", "⚠"),
}
TITLES: dict[BannerKind, str] = {
    BannerKind.OK: "OK — no ID needed",
    BannerKind.ASK_ID: "ASK FOR ID",
    BannerKind.NO_FACE: "NO FACE SEEN — ASK FOR ID",
    # The camera needs someone to look at it, and the cashier is the one who can say so.
    BannerKind.CAMERA_DOWN: "CAMERA DOWN — ASK FOR ID — tell a supervisor",
    BannerKind.RECORDED: "Answer recorded",
    BannerKind.NOTICE: "",  # the notice's own words
}
DECISION_KIND: dict[Decision, BannerKind] = {
    Decision.APPROVE: BannerKind.OK,
    Decision.CHECK_ID: BannerKind.ASK_ID,
    Decision.NO_FACE: BannerKind.NO_FACE,
}
# An alert whose sale is done: still answerable (the record needs the answer), in a look of its
# own so it is never read as the shopper in front of the cashier now.
SALE_DONE_TITLE = "SALE DONE — answer for the record"
SALE_DONE_STYLE = Style("#4b4b4b", "#ffffff", "✎")
# An item name longer than this is cut with an ellipsis so the line stays on the window.
ITEM_CHARS = 48


@dataclass(frozen=True)
class Banner:
    kind: BannerKind
    title: str
    symbol: str
    detail: str  # the camera's estimate and the rule, second to the instruction
    item_text: str
    transaction_id: str | None
    bg: str
    fg: str
    sale_done: bool = False  # an alert of a sale that is over: answered for the record only

    @property
    def needs_answer(self) -> bool:
        return self.kind in ANSWERABLE

    @property
    def title_lines(self) -> list[str]:
        """The title as shown: the situation on the first line and what to do on the next
        ("CAMERA DOWN —" / "ASK FOR ID — tell a supervisor"), never where the words happen to wrap."""
        for mark in (" — ", ": "):
            head, sep, rest = self.title.partition(mark)
            if sep and len(self.title) > 20:
                return [head + mark.rstrip(), rest]
        return [self.title]


def _relative_luminance(colour: str) -> float:
    def chan(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * chan(r) + 0.7152 * chan(g) + 0.0722 * chan(b)


def contrast(fg: str, bg: str) -> float:
    """WCAG 2 contrast ratio of two #rrggbb colours (1 to 21)."""
    a, b = sorted((_relative_luminance(fg), _relative_luminance(bg)), reverse=True)
    return (a + 0.05) / (b + 0.05)


def kind_of(check: CheckEvent | None, alert: AlertEvent | None = None) -> BannerKind:
    """The banner for a decision. A camera that was not up makes a no-face check its own kind;
    a decision this build does not know errs on the side of asking for ID."""
    src = check or alert
    kind = DECISION_KIND.get(src.decision, BannerKind.ASK_ID) if src is not None else BannerKind.ASK_ID
    # The alert carries the camera too, for when its check is late or lost.
    camera = next((ev.camera for ev in (check, alert) if ev is not None and ev.camera is not None), None)
    if kind == BannerKind.NO_FACE and camera not in (None, "up"):
        return BannerKind.CAMERA_DOWN
    return kind


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def estimate_text(check: CheckEvent | None, alert: AlertEvent | None = None) -> str:
    """The camera's estimate as a range the cashier will not read as a precise age: the model's
    calibrated interval (a check decided by the calibrated rule carries p_over and its
    age_low/age_high) or else the age band; nothing without a face."""
    src = check or alert
    if src is None or src.decision == Decision.NO_FACE:
        return ""
    if check is not None and (_num(check.p_over) is not None or check.policy.calibrated):
        lo, hi = _num(check.age_low), _num(check.age_high)
        if lo is not None and hi is not None:
            a, b = max(0, round(lo)), round(hi)
            return f"camera estimate about {a}–{b}" if b > a else f"camera estimate about {a}"
    band = src.age_band
    if isinstance(band, str) and band:
        if band.endswith("+"):
            return f"camera estimate {band[:-1]} or over"
        return "camera estimate about " + band.replace("-", "–")
    return ""


def _rule_text(check: CheckEvent | None) -> str:
    if check is None:
        return ""
    pol = check.policy
    ch, legal = pol.challenge_age, pol.legal_age
    if ch and legal and ch != legal:
        return f"Challenge {ch}"
    return f"legal age {legal or ch}" if (legal or ch) else ""


def item_text(item: Product | None) -> str:
    """The product as the cashier knows it: its name from the POS when the scan carried one,
    else its SKU; with the age limit."""
    if item is None:
        return ""
    name = item.name.strip() if item.name and item.name.strip() else None
    label = name if name else (f"SKU {item.sku}" if item.sku else "")
    if len(label) > ITEM_CHARS:
        label = label[: ITEM_CHARS - 1] + "…"
    return f"{label} · {item.min_age}+" if label and item.min_age is not None else label


def _product(check: CheckEvent | None, alert: AlertEvent | None) -> Product | None:
    """The alert's item, else what the check's trigger says (an alert that came without one)."""
    if alert is not None and alert.item.known:
        return alert.item
    return check.trigger.product if check is not None else None


def banner_for(check: CheckEvent | None, alert: AlertEvent | None = None) -> Banner:
    """The banner for a check (and its alert, if any). Either may be missing, not both."""
    src = check or alert
    if src is None:
        raise ValueError("banner_for needs a check or an alert event")
    kind = kind_of(check, alert)
    style = STYLES[kind]
    detail = " · ".join(t for t in (estimate_text(check, alert), _rule_text(check)) if t)
    txn = src.transaction_id
    return Banner(
        kind,
        TITLES[kind],
        style.symbol,
        detail[:1].upper() + detail[1:],
        item_text(_product(check, alert)),
        txn if isinstance(txn, str) else None,
        style.bg,
        style.fg,
    )


def sale_done_banner(banner: Banner) -> Banner:
    """An alert whose sale is done: the same alert, answerable, in the grey look, saying what it
    had asked for."""
    detail = " · ".join(t for t in (f"Was: {banner.title}", banner.detail) if t)
    return replace(
        banner,
        title=SALE_DONE_TITLE,
        symbol=SALE_DONE_STYLE.symbol,
        detail=detail,
        bg=SALE_DONE_STYLE.bg,
        fg=SALE_DONE_STYLE.fg,
        sale_done=True,
    )


def recorded_banner(answer: Answer, transaction_id: str | None) -> Banner:
    style = STYLES[BannerKind.RECORDED]
    return Banner(
        BannerKind.RECORDED,
        TITLES[BannerKind.RECORDED],
        style.symbol,
        ANSWER_LABELS.get(answer, answer),
        "",
        transaction_id,
        style.bg,
        style.fg,
    )


def notice_banner(text: str) -> Banner:
    """A notice about the window itself ("NOT CONNECTED TO TILL till-01: check the login")."""
    style = STYLES[BannerKind.NOTICE]
    return Banner(
        BannerKind.NOTICE,
        text,
        style.symbol,
        "Alerts cannot reach this window. Tell a supervisor.",
        "",
        None,
        style.bg,
        style.fg,
    )


def waiting_text(n: int) -> str:
    return "" if n <= 0 else f"+{n} more alert{'s' if n != 1 else ''} waiting"


# -- where the window's parts go --------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """The window's rows, in pixels from its top: the banner, the answer buttons, the Undo row and
    the status line. Fixed for a window size, whatever is shown: nothing moves under a finger."""

    width: int
    banner_h: int
    answers_y: int
    answers_h: int
    undo_y: int
    undo_h: int
    status_y: int
    status_h: int
    button_w: int  # each of the three answer buttons' column
    undo_x: int  # the Undo button: the right part of its own row, below the answers


def layout(width: int, height: int) -> Layout:
    status_h = max(18, round(height * 0.08))
    undo_h = max(30, round(height * 0.14))
    answers_h = max(48, round(height * 0.24))
    banner_h = height - status_h - undo_h - answers_h
    return Layout(
        width=width,
        banner_h=banner_h,
        answers_y=banner_h,
        answers_h=answers_h,
        undo_y=banner_h + answers_h,
        undo_h=undo_h,
        status_y=height - status_h,
        status_h=status_h,
        button_w=width // 3,
        undo_x=width - max(90, width // 5),
    )


def button_lines(answer: Answer) -> list[str]:
    """An answer button's text: its label (core/words.py) broken after the dash, "ID checked –" /
    "over age", so a label breaks only there, never inside its words."""
    head, sep, rest = ANSWER_LABELS[answer].partition(" – ")
    return [head + " –", rest] if sep else [head]


# -- the queue of unanswered alerts -----------------------------------------------------------------
@dataclass
class Pending:
    """One alert on the window's list: keyed by its check's event_id (the check and its alert
    arrive separately, in either order)."""

    key: str
    check: CheckEvent | None = None
    alert: AlertEvent | None = None
    added: float = 0.0  # monotonic; the decision time runs from here
    visible_from: float = 0.0  # an alert whose check is late waits a moment for it
    order: int = 0  # newest is highest
    # The sale is over (the till reported it, or the next shopper's check came): the alert is
    # answered for the record, after the shopper in front.
    sale_done: bool = False

    @property
    def alert_event_id(self) -> str | None:
        return self.alert.event_id if self.alert is not None else None

    @property
    def transaction_id(self) -> str | None:
        src = self.check or self.alert
        return src.transaction_id if src is not None else None

    @property
    def banner(self) -> Banner:
        b = banner_for(self.check, self.alert)
        return sale_done_banner(b) if self.sale_done else b


@dataclass
class AlertQueue:
    """Unanswered alerts, newest first on screen. Time comes in as arguments (monotonic seconds)."""

    expire_seconds: float
    alert_without_check_seconds: float = 1.5
    keep: int = 200  # more than a till can raise before anyone answers; the oldest go first
    _items: dict[str, Pending] = field(default_factory=dict)
    _next: int = 0

    def _order(self) -> int:
        self._next += 1
        return self._next

    def add_check(self, check: CheckEvent, now: float) -> Pending | None:
        """A check that needs an answer joins the list (an approval never does)."""
        if banner_for(check).kind == BannerKind.OK:
            return None
        key = check.event_id
        p = self._items.get(key)
        if p is None:
            p = self._items[key] = Pending(key, check=check, added=now, visible_from=now, order=self._order())
        else:
            p.check = check
            p.visible_from = min(p.visible_from, now)
        self._trim()
        return p

    def add_alert(self, alert: AlertEvent, now: float) -> Pending:
        key = alert.check_event_id or alert.event_id
        p = self._items.get(key)
        if p is None:
            p = self._items[key] = Pending(
                key, alert=alert, added=now, visible_from=now + self.alert_without_check_seconds, order=self._order()
            )
        else:
            p.alert = alert
        self._trim()
        return p

    def knows_alert(self, alert_event_id: str) -> bool:
        return any(p.alert_event_id == alert_event_id for p in self._items.values())

    def remove_alert(self, alert_event_id: str) -> Pending | None:
        for k, p in list(self._items.items()):
            if p.alert_event_id == alert_event_id:
                return self._items.pop(k)
        return None

    def restore(self, p: Pending, now: float) -> Pending:
        """An answer undone: the alert is back, on top, as if it had just come."""
        p = replace(p, order=self._order(), visible_from=now)
        self._items[p.key] = p
        return p

    def expire(self, now: float) -> list[Pending]:
        gone = [p for p in self._items.values() if now - p.added >= self.expire_seconds]
        for p in gone:
            del self._items[p.key]
        return gone

    def sale_done(
        self, transaction_id: str | None = None, *, alert_event_id: str | None = None, other_than: str | None = None
    ) -> list[Pending]:
        """Mark alerts whose sale is over: those of a transaction, the one alert, or those of every
        transaction but the one now at the till (`other_than`). Returns the ones newly marked."""
        marked = []
        for p in self._items.values():
            txn = p.transaction_id
            hit = (
                (transaction_id is not None and txn == transaction_id)
                or (alert_event_id is not None and p.alert_event_id == alert_event_id)
                or (other_than is not None and txn != other_than)
            )
            if hit and not p.sale_done:
                p.sale_done = True
                marked.append(p)
        return marked

    def live_for(self, transaction_id: str | None, now: float) -> bool:
        """An alert of this transaction is on the list and its sale is not done."""
        return any(not p.sale_done and p.transaction_id == transaction_id for p in self.visible(now))

    def visible(self, now: float) -> list[Pending]:
        """What the cashier sees in turn: the alerts of the sale going on first (newest first),
        then those whose sale is done (newest first)."""
        return sorted((p for p in self._items.values() if p.visible_from <= now), key=lambda p: (p.sale_done, -p.order))

    def current(self, now: float) -> Pending | None:
        v = self.visible(now)
        return v[0] if v else None

    def waiting(self, now: float) -> int:
        """Alerts on the list besides the one shown."""
        return max(0, len(self.visible(now)) - 1)

    def next_change(self, now: float) -> float | None:
        """When the list will change by itself (a late alert shows, or one expires)."""
        times = [p.visible_from for p in self._items.values() if p.visible_from > now]
        times += [p.added + self.expire_seconds for p in self._items.values()]
        return min(times) if times else None

    def __len__(self) -> int:
        return len(self._items)

    def _trim(self) -> None:
        while len(self._items) > self.keep:
            oldest = min(self._items.values(), key=lambda p: p.order)
            del self._items[oldest.key]
