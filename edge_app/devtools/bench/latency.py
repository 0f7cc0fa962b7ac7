"""Bench latency: a real Service in this process (the bench's detector and model, real capture of
the video at the camera's rate, a real broker), triggered over MQTT like a POS one scan at a
time: trigger -> decision, POS scan -> check event at a subscriber, publishing (outbox + MQTT),
and POS scan -> alert drawn by the cashier window (on $DISPLAY, else on a private Xvfb)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edge_app.cashier.isolated import attach
from edge_app.core import events, topics
from edge_app.core.words import Answer
from edge_app.devtools.bench.harness import Listener, bench_config, connected_pos
from edge_app.devtools.sim import Xvfb
from edge_app.till import plugins
from edge_app.till.service import Service


@dataclass
class LatencyFigures:
    decision: list[float] = field(default_factory=list)  # Trigger.received -> decision (service clock)
    pos_to_event: list[float] = field(default_factory=list)  # POS publish -> check event at a subscriber
    visible: list[float] = field(default_factory=list)  # POS publish -> banner drawn
    publish: list[float] = field(default_factory=list)  # publish_event() -> event at a subscriber
    frames_used: list[int] = field(default_factory=list)
    frames_seen: list[int] = field(default_factory=list)
    decisions: dict[str, int] = field(default_factory=dict)
    display_note: str = ""
    screen: str = ""  # where the window drew: "$DISPLAY" or "Xvfb"
    missed: int = 0


@contextlib.contextmanager
def cashier_screen() -> Iterator[tuple[str, str]]:
    """(screen, "") where the cashier window can draw - "$DISPLAY" when it is set, else "Xvfb",
    a private one made $DISPLAY for the duration - or ("", why not)."""
    if os.environ.get("DISPLAY"):
        yield "$DISPLAY", ""
        return
    try:
        xvfb = Xvfb().start()
    except FileNotFoundError as exc:
        yield "", f"no $DISPLAY and {exc}"
        return
    except RuntimeError as exc:
        yield "", str(exc)
        return
    os.environ["DISPLAY"] = xvfb.display or ""
    try:
        yield "Xvfb", ""
    finally:
        os.environ.pop("DISPLAY", None)  # it was not set before
        xvfb.stop()


def press_answer(display) -> None:
    """Answer an alert like a cashier (a click on "ID checked – over age"; keys count only while
    the window has the focus, which it does not take), so a later approval is shown, not held
    back."""
    if shutil.which("xdotool") is None:
        return
    snap = display.snapshot
    box = snap.buttons.get(Answer.ID_CHECKED_OVER_AGE)
    if not box or not snap.answerable:
        return
    x, y, w, h = box
    subprocess.run(
        ["xdotool", "mousemove", str(x + w // 2), str(y + h // 2), "click", "1"], capture_output=True, timeout=10
    )
    deadline = time.monotonic() + 2
    while display.snapshot.alert_event_id == snap.alert_event_id and time.monotonic() < deadline:
        time.sleep(0.01)


def _drawn_at(display, txn: str) -> float | None:
    """When the window drew the banner of `txn` (monotonic), waiting up to 5 s for it."""
    end = time.monotonic() + 5
    snap = display.snapshot
    while time.monotonic() < end:
        snap = display.snapshot
        if snap.visible and snap.transaction_id == txn and snap.drawn_at:
            break
        time.sleep(0.005)
    if snap.transaction_id == txn and snap.drawn_at:
        if snap.answerable:
            press_answer(display)
        return snap.drawn_at
    return None


def measure_latency(cfg, video: Path, broker, tmp: Path, checks: int, pipeline, model) -> LatencyFigures:
    """A real Service in this process (shared detector and model, real capture of the video at the
    camera's rate, real broker), triggered over MQTT like a POS, one scan at a time."""
    with cashier_screen() as (screen, no_screen):
        return _measure(cfg, video, broker, tmp, checks, pipeline, model, screen, no_screen)


def _start_service(lcfg, pipeline, model, out: LatencyFigures, with_display: bool):
    """The service and the cashier window it attached (None without one)."""
    windows: list = []

    def window_plugin(svc):
        windows.append(attach(svc))
        return windows[-1]

    if with_display:
        service = Service(lcfg, pipeline=pipeline, model=model, plugins=[window_plugin])
        try:
            return service.start(), windows[0] if windows else None
        except Exception as exc:  # e.g. Tk cannot open the screen: measure without the window
            service.stop()
            out.display_note = f"n/a: the cashier window could not open ({exc})"
    lcfg = dataclasses.replace(lcfg, display=dataclasses.replace(lcfg.display, enabled=False))
    return Service(lcfg, pipeline=pipeline, model=model).start(), None


class _PublishClock(plugins.Listener):
    """When publish_event starts on each event (monotonic seconds by event id)."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}

    def on_publishing(self, event: events.Event) -> None:
        self.started.setdefault(event.event_id, time.monotonic())


def _measure(
    cfg, video: Path, broker, tmp: Path, checks: int, pipeline, model, screen: str, no_screen: str
) -> LatencyFigures:
    out = LatencyFigures(screen=screen)
    with_display = not no_screen
    if no_screen:
        out.display_note = f"n/a: {no_screen}"
    lcfg = bench_config(cfg, video, broker.port, tmp, "bench-latency", loop=True)
    lcfg = dataclasses.replace(lcfg, display=dataclasses.replace(lcfg.display, enabled=with_display))
    listener = Listener(broker.host, broker.port, [topics.event_topic(lcfg.store_id, lcfg.till_id)], "latency")
    pos = connected_pos(broker.host, broker.port, lcfg.store_id, lcfg.till_id)
    service = None
    try:
        service, display = _start_service(lcfg, pipeline, model, out, with_display)
        # When publish_event starts on each event: with the subscriber's arrival time, the cost of
        # publishing (outbox + MQTT).
        clock = _PublishClock()
        published = clock.started
        service.listen(clock)
        deadline = time.monotonic() + 30
        while not (service.link.subscribed.is_set() and service.capture.status == "up"):
            if time.monotonic() > deadline:
                raise RuntimeError("the bench's service did not connect or its camera did not come up")
            time.sleep(0.02)
        time.sleep(lcfg.camera.buffer_seconds + 0.2)  # ring buffer warm
        rnd = random.Random(6)
        budget_s = lcfg.check.time_budget_ms / 1000
        for k in range(checks):
            txn = f"bench-{k:04d}"
            start = len(listener.messages)
            t_pub = pos.scan(txn)
            got = listener.wait_check(txn, budget_s + 10, start)
            if got is None:
                out.missed += 1
                continue
            ev = got.event
            out.pos_to_event.append((got.at - t_pub) * 1000)
            if ev.latency_ms.total is None:
                raise RuntimeError(f"the check for {txn} does not say how long it took (latency_ms)")
            out.decision.append(float(ev.latency_ms.total))
            out.frames_used.append(ev.frames_used)
            out.frames_seen.append(int(ev.frames_seen or 0))
            out.decisions[ev.decision] = out.decisions.get(ev.decision, 0) + 1
            if ev.event_id in published:
                out.publish.append((got.at - published[ev.event_id]) * 1000)
            if display is not None:
                drawn = _drawn_at(display, txn)
                if drawn is not None:
                    out.visible.append((drawn - t_pub) * 1000)
            # Triggers land at random phases of the camera's frame clock, like real scans.
            time.sleep(0.25 + rnd.random() * 0.25)
    finally:
        pos.close()
        if service is not None:
            service.stop()
        listener.close()
    return out
