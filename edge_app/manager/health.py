"""Till health, the dashboard's camera panel: per till and hour, the share of checks that found a
usable face, the minutes with a NO FACE check and with the camera down, the quality gate's figures
of the shopper's face (sharpness, brightness, size: the check's `sharpness`, `brightness`,
`eyes_px`, medians) and the alert rate, each hour set against the till's own usual (its other
hours in the page's scope), with the departures said in words: a camera moved, dirty or lit
differently shows here before cashiers learn to ignore its alerts.

It owns these figures and the rules that mark a departure (the constants below). The checks are
read from the store's columns (events.camera and the quality columns, db migration 5), filtered by
the page's Scope like every other figure; a store not yet migrated reads as having no quality
figures.
"""

from __future__ import annotations

import bisect
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from edge_app.core import events
from edge_app.core.times import local_dt
from edge_app.core.words import Decision
from edge_app.manager.db import Database
from edge_app.manager.scope import Period, Scope

# An hour is judged on at least this many checks, against a usual of at least this many.
MIN_HOUR_CHECKS = 3
MIN_USUAL_CHECKS = 8
# What counts as departing from the till's usual.
USABLE_DROP = 0.30  # the share of checks with a usable face this much below its usual share
ALERT_RISE = 0.30  # the share of checks raising an alert this much above its usual share
SHARPNESS_FALL = 0.5  # the median sharpness below this fraction of its usual (dirty, out of focus)
BRIGHTNESS_SHIFT = 40.0  # grey levels (of 255) away from its usual (lit differently, lamp out)
SIZE_RATIO = (0.7, 1.4)  # faces this much smaller or bigger than usual (camera moved or zoomed)
# Hours shown per till on the page (newest first); summary.json holds every one.
HOURS_SHOWN = 12


@dataclass(frozen=True)
class _Check:
    """One check, as the panel reads it."""

    minute: datetime  # local, to the minute
    usable: bool
    camera_down: bool
    alert: bool
    sharpness: float | None
    brightness: float | None
    eyes_px: float | None


@dataclass(frozen=True)
class Figures:
    """Figures of a set of checks (an hour, or a till's usual)."""

    checks: int
    usable: int
    alerts: int
    no_face_minutes: int
    camera_down_minutes: int
    sharpness: float | None
    brightness: float | None
    eyes_px: float | None

    @property
    def usable_share(self) -> float | None:
        return self.usable / self.checks if self.checks else None

    @property
    def alert_rate(self) -> float | None:
        return self.alerts / self.checks if self.checks else None

    def as_json(self) -> dict:
        return {
            "checks": self.checks,
            "usable_share": self.usable_share,
            "alert_rate": self.alert_rate,
            "no_face_minutes": self.no_face_minutes,
            "camera_down_minutes": self.camera_down_minutes,
            "sharpness": self.sharpness,
            "brightness": self.brightness,
            "eyes_px": self.eyes_px,
        }


@dataclass(frozen=True)
class Hour:
    """One hour of one till: its figures, its usual (the till's other hours) and how it departs."""

    start: datetime  # local
    figures: Figures
    usual: Figures
    departures: tuple[str, ...]

    def as_json(self) -> dict:
        return {
            "hour": self.start.strftime("%Y-%m-%d %H:00"),
            **self.figures.as_json(),
            "usual": self.usual.as_json(),
            "departures": list(self.departures),
        }


@dataclass(frozen=True)
class TillHealth:
    store_id: str
    till_id: str
    usual: Figures  # over every hour of the scope
    hours: tuple[Hour, ...]  # newest first

    @property
    def departing(self) -> tuple[Hour, ...]:
        return tuple(h for h in self.hours if h.departures)

    def as_json(self) -> dict:
        return {
            "store_id": self.store_id,
            "till_id": self.till_id,
            "usual": self.usual.as_json(),
            "departs": bool(self.departing),
            "hours": [h.as_json() for h in self.hours],
        }


def _median(values: Iterable[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return round(statistics.median(got), 1) if got else None


def figures(checks: list[_Check]) -> Figures:
    return Figures(
        checks=len(checks),
        usable=sum(c.usable for c in checks),
        alerts=sum(c.alert for c in checks),
        no_face_minutes=len({c.minute for c in checks if not c.usable and not c.camera_down}),
        camera_down_minutes=len({c.minute for c in checks if c.camera_down}),
        sharpness=_median(c.sharpness for c in checks),
        brightness=_median(c.brightness for c in checks),
        eyes_px=_median(c.eyes_px for c in checks),
    )


def median_without(ordered: list[float], some: list[float]) -> float | None:
    """The median of `ordered` (sorted) once `some` of its values are taken out, without copying
    it: each hour's usual is the till's other hours, and a year has thousands of hours."""
    n = len(ordered) - len(some)
    if n <= 0:
        return None
    gone: list[int] = []  # the positions in `ordered` taken out, one per value taken
    for v, k in Counter(some).items():
        first = bisect.bisect_left(ordered, v)
        gone.extend(range(first, first + k))
    gone.sort()
    taken = set(gone)

    def kth(k: int) -> float:
        j = k + bisect.bisect_right(gone, k)
        while j in taken or j - bisect.bisect_right(gone, j) < k:
            j += 1
        return ordered[j]

    mid = kth(n // 2) if n % 2 else (kth(n // 2 - 1) + kth(n // 2)) / 2
    return round(mid, 1)


@dataclass(frozen=True)
class _Totals:
    """A till's counts over the whole scope, taken once."""

    checks: int
    usable: int
    alerts: int
    ordered: dict[str, list[float]]  # each quality figure's values, sorted


_PICK: dict[str, Callable[[_Check], float | None]] = {
    "sharpness": lambda c: c.sharpness,
    "brightness": lambda c: c.brightness,
    "eyes_px": lambda c: c.eyes_px,
}


def _totals(checks: list[_Check]) -> _Totals:
    return _Totals(
        len(checks),
        sum(c.usable for c in checks),
        sum(c.alert for c in checks),
        {k: sorted(v for c in checks if (v := f(c)) is not None) for k, f in _PICK.items()},
    )


def _others(t: _Totals, hour: list[_Check]) -> Figures:
    """The till's usual for one hour: its figures over every other hour of the scope."""
    med = {k: median_without(t.ordered[k], [v for c in hour if (v := f(c)) is not None]) for k, f in _PICK.items()}
    return Figures(
        checks=t.checks - len(hour),
        usable=t.usable - sum(c.usable for c in hour),
        alerts=t.alerts - sum(c.alert for c in hour),
        no_face_minutes=0,
        camera_down_minutes=0,
        **med,
    )


def departures(h: Figures, usual: Figures) -> tuple[str, ...]:
    """How an hour departs from the till's usual, in words (empty: as usual)."""
    out = []
    if h.camera_down_minutes:
        out.append(f"camera down in {h.camera_down_minutes} minute(s)")
    if h.checks < MIN_HOUR_CHECKS or usual.checks < MIN_USUAL_CHECKS:
        return tuple(out)
    hu, uu = h.usable_share, usual.usable_share
    if hu is not None and uu is not None and hu < uu - USABLE_DROP:
        out.append(f"usable face on {hu:.0%} of checks (usual {uu:.0%})")
    if h.sharpness is not None and usual.sharpness and h.sharpness < SHARPNESS_FALL * usual.sharpness:
        out.append(f"sharpness {h.sharpness:.0f} (usual {usual.sharpness:.0f}): lens dirty or out of focus?")
    hb, ub = h.brightness, usual.brightness
    if hb is not None and ub is not None and abs(hb - ub) > BRIGHTNESS_SHIFT:
        out.append(f"brightness {hb:.0f} (usual {ub:.0f}): {'darker' if hb < ub else 'brighter'}, lit differently?")
    if h.eyes_px is not None and usual.eyes_px:
        ratio = h.eyes_px / usual.eyes_px
        if not SIZE_RATIO[0] <= ratio <= SIZE_RATIO[1]:
            side = "smaller" if ratio < 1 else "bigger"
            out.append(f"faces {side}: eyes {h.eyes_px:.0f} px apart (usual {usual.eyes_px:.0f}): camera moved?")
    ha, ua = h.alert_rate, usual.alert_rate
    if ha is not None and ua is not None and ha > ua + ALERT_RISE:
        out.append(f"alerts on {ha:.0%} of checks (usual {ua:.0%})")
    return tuple(out)


_COLUMNS = ("ts", "store_id", "till_id", "decision", "operator_id", "camera", "sharpness", "brightness", "eyes_px")


def _read(db: Database, period: Period, tz: tzinfo | None, scope: Scope) -> dict[tuple[str, str], list[_Check]]:
    """The checks the scope admits, by (store, till), oldest first."""
    have = db.columns("events")
    cols = ", ".join(c if c in have else f"NULL AS {c}" for c in _COLUMNS)  # a store from before migration 5
    where = ["kind = ?", "ts >= ?", "ts < ?"]
    params: list = [
        events.CheckEvent.KIND,
        (period.since - timedelta(days=1)).isoformat(),
        (period.until + timedelta(days=2)).isoformat(),
    ]
    for col, val in (("store_id", scope.store), ("till_id", scope.till), ("operator_id", scope.cashier)):
        if val:
            where.append(f"{col} = ?")
            params.append(val)
    out: dict[tuple[str, str], list[_Check]] = {}
    for ts, store, till, decision, _, camera, sharp, bright, eyes in db.query(
        f"SELECT {cols} FROM events WHERE {' AND '.join(where)} ORDER BY ts", params
    ):
        dt = local_dt(ts, tz)
        if dt is None or not (period.since <= dt.date() <= period.until):
            continue
        if scope.hours is not None and not scope.hours.contains(dt):
            continue
        down = decision == Decision.NO_FACE and camera not in (None, "up")
        out.setdefault((store, till), []).append(
            _Check(
                dt.replace(second=0, microsecond=0),
                decision != Decision.NO_FACE,
                down,
                decision != Decision.APPROVE,
                sharp,
                bright,
                eyes,
            )
        )
    return out


def till_health(db: Database, period: Period, tz: tzinfo | None, scope: Scope) -> list[TillHealth]:
    """Every till's health over the period, for the checks the scope admits (none under a kind
    filter other than check: the panel reads checks)."""
    if scope.kind not in (None, events.CheckEvent.KIND):
        return []
    out = []
    for (store, till), checks in sorted(_read(db, period, tz, scope).items()):
        by_hour: dict[datetime, list[_Check]] = {}
        for c in checks:
            by_hour.setdefault(c.minute.replace(minute=0), []).append(c)
        totals = _totals(checks)
        hours = []
        for start in sorted(by_hour, reverse=True):
            fig = figures(by_hour[start])
            usual = _others(totals, by_hour[start])
            hours.append(Hour(start, fig, usual, departures(fig, usual)))
        out.append(TillHealth(store, till, figures(checks), tuple(hours)))
    return out
