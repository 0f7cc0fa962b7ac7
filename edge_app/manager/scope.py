"""What a report or a dashboard page is asked for: the period (days), and the scope (store, till,
cashier, kind of event, time of day) that every figure, table and chart is narrowed by. It owns
how those are read from text (the report's options, the dashboard's URL parameters) and the
messages that name a bad one, and the timezone days and times of day are counted in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo

from edge_app.config import Config
from edge_app.core import events
from edge_app.errors import UsageError

MAX_DAYS = 366


class ReportInputError(UsageError):
    """Bad dates, a missing or foreign database, an unusable output folder."""


@dataclass(frozen=True)
class Period:
    since: date
    until: date

    @property
    def days(self) -> list[date]:
        return [self.since + timedelta(days=i) for i in range((self.until - self.since).days + 1)]


# The dates a period may name: the figures read a day either side of it, so the ends of Python's
# calendar would overflow (a traceback, or a 500 from the dashboard) instead of being refused.
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9998, 12, 31)


def _parse_day(value: str, flag: str) -> date:
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise ReportInputError(f"{flag}: {value!r} is not a date; use YYYY-MM-DD, e.g. 2025-03-14") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ReportInputError(f"{flag}: {value!r} is out of range; use a date from {FIRST_DAY} to {LAST_DAY}")
    return day


def parse_period(
    since: str | None, until: str | None, today: date, names: tuple[str, str] = ("--since", "--until")
) -> Period:
    """Both ends inclusive. Defaults: until = today, since = 6 days before until (one week).
    `names` are what the messages call the two ends (the report's flags, the dashboard's URL
    parameters)."""
    end = _parse_day(until, names[1]) if until else today
    start = _parse_day(since, names[0]) if since else end - timedelta(days=6)
    if start > end:
        raise ReportInputError(f"{names[0]} {start.isoformat()} is after {names[1]} {end.isoformat()}; swap them")
    if (end - start).days + 1 > MAX_DAYS:
        raise ReportInputError(
            f"{names[0]}/{names[1]}: {(end - start).days + 1} days asked for; a report covers "
            f"at most {MAX_DAYS} days, run one per year"
        )
    return Period(start, end)


@dataclass(frozen=True)
class TimeOfDay:
    """Local clock times from `start` (inclusive) to `end` (exclusive), in minutes after midnight;
    a range that ends before it starts runs over midnight (22:00 to 02:00), so a late shift is
    one range."""

    start: int
    end: int

    def contains(self, dt: datetime) -> bool:
        m = dt.hour * 60 + dt.minute
        if self.start <= self.end:
            return self.start <= m < self.end
        return m >= self.start or m < self.end

    @staticmethod
    def _text(m: int) -> str:
        return f"{m // 60:02d}:{m % 60:02d}"

    @property
    def start_text(self) -> str:
        return self._text(self.start)

    @property
    def end_text(self) -> str:
        return self._text(self.end)


def _parse_clock(value: str, name: str) -> int:
    text = value.strip()
    try:
        hh, mm = text.split(":")
        h, m = int(hh), int(mm)
    except ValueError:
        h = m = -1
    # 24:00 is the end of the day (a range "from 18:00 to 24:00").
    if not (0 <= h <= 24 and 0 <= m <= 59) or (h == 24 and m) or len(text) not in (4, 5):
        raise ReportInputError(f"{name}: {value!r} is not a time of day; use HH:MM, e.g. 14:30")
    return h * 60 + m


def parse_time_of_day(
    start: str | None, end: str | None, names: tuple[str, str] = ("--from-time", "--to-time")
) -> TimeOfDay | None:
    """None (the whole day) when neither is given; one end alone runs from midnight or to midnight."""
    if not start and not end:
        return None
    lo = _parse_clock(start, names[0]) if start else 0
    hi = _parse_clock(end, names[1]) if end else 24 * 60
    if lo == hi or (lo, hi) == (0, 24 * 60):
        if lo == hi:
            raise ReportInputError(
                f"{names[0]} and {names[1]} are both {TimeOfDay._text(lo)}; give a range, "
                "or leave both empty for the whole day"
            )
        return None
    return TimeOfDay(lo, hi)


@dataclass(frozen=True)
class Scope:
    """Which events the figures count: a store, a till, a cashier, one kind of event and a time of
    day (all optional). The report and the dashboard filter through this one definition, so every
    figure, table and chart of a page answers the same question.

    The cashier of an answer or an integrity event is the one logged in when its alert was shown
    (the till's own events carry the POS's `operator_id`; a cashier window's answer may not). An
    alert's outcome (answered, ID checked) is looked up over every answer stored, also under a
    kind filter: "alerts" with "ID checked 40%" still reads right."""

    store: str | None = None
    till: str | None = None
    cashier: str | None = None
    kind: str | None = None
    hours: TimeOfDay | None = None

    def admits(self, ev: events.Event, local: datetime, cashier: str | None) -> bool:
        return (
            (self.store is None or ev.store_id == self.store)
            and (self.till is None or ev.till_id == self.till)
            and (self.cashier is None or cashier == self.cashier)
            and (self.kind is None or ev.KIND == self.kind)
            and (self.hours is None or self.hours.contains(local))
        )

    @property
    def narrowed(self) -> bool:
        """Whether anything but the store narrows the events (the page says so beside its figures)."""
        return any(v is not None for v in (self.till, self.cashier, self.kind, self.hours))


def report_timezone(cfg: Config) -> tuple[tzinfo | None, str]:
    """The timezone the report and the dashboard give days and times in (feed.timezone, else this
    computer's; None for this computer's), and its name in words."""
    if cfg.feed.timezone:
        import zoneinfo

        return zoneinfo.ZoneInfo(cfg.feed.timezone), cfg.feed.timezone
    local = datetime.now().astimezone().tzinfo
    return None, f"this computer's timezone ({datetime.now().astimezone().tzname() or local})"
