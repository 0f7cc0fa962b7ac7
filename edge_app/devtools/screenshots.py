"""Screenshots of the cashier window for the docs (`python -m edge_app.devtools.screenshots DIR`):
each banner state drawn by the real window on a private Xvfb from made-up events (no photo is
involved), and the window as `agecheck run --demo` shows it (the demo's camera is the
public-domain NASA astronaut portrait). Writes cashier-banners.png and cashier-window.png.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image, ImageGrab

from edge_app.cashier.banner import BannerKind
from edge_app.cashier.window import CashierDisplay
from edge_app.cashier.window_state import DOUBLE_TAP_S
from edge_app.config import DisplayConfig
from edge_app.core import event_parts, events
from edge_app.core.words import Answer, Decision, PolicyRule
from edge_app.devtools.sim import Xvfb

GAP = 12


def _grab(box):
    x, y, w, h = box
    return ImageGrab.grab(bbox=(x, y, x + w, y + h), xdisplay=os.environ["DISPLAY"]).convert("RGB")


def _wait(pred, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise RuntimeError("the window did not show what was expected in time")


LAGER = event_parts.Product(sku="5010677850100", category="alcohol", min_age=18, name="Lager 4x440ml")


def _events(
    decision: Decision, txn: str, camera: str = "up", low: float = 16.6, high: float = 25.8
) -> tuple[events.CheckEvent, events.AlertEvent | None]:
    age = None if decision == Decision.NO_FACE else (low + high) / 2
    check = events.CheckEvent(
        store_id="store-001",
        till_id="till-01",
        transaction_id=txn,
        trigger=event_parts.TriggerInfo(LAGER, source="pos"),
        frames_used=0 if age is None else 3,
        faces_seen=0 if age is None else 1,
        decision=decision,
        age=age,
        age_low=None if age is None else low,
        age_high=None if age is None else high,
        age_band=None if age is None else "18-24",
        p_over=None if age is None else 0.3,
        policy=event_parts.PolicyInfo(legal_age=18, challenge_age=25, rule=PolicyRule.CALIBRATED),
        model_id="example",
        latency_ms=event_parts.Latency(total=100.0),
        camera=camera,
    )
    alert = (
        None
        if decision == Decision.APPROVE
        else events.AlertEvent(
            store_id="store-001",
            till_id="till-01",
            transaction_id=txn,
            check_event_id=check.event_id,
            decision=decision,
            age_band=check.age_band,
            item=LAGER,
            camera=camera,
        )
    )
    return check, alert


def banners(out: Path) -> Path:
    """Every state, one under the other: ask for ID, no face, camera down, OK, two alerts waiting,
    and the confirmation with Undo."""
    acks: queue.Queue = queue.Queue()
    d = CashierDisplay(
        DisplayConfig(position="top-left", undo_seconds=60, approve_seconds=60), "store-001", "till-01", acks.put
    ).start_in_thread()
    shots = []
    try:

        def shot(**want):
            snap = _wait(lambda: (s := d.snapshot).drawn_at and all(getattr(s, k) == v for k, v in want.items()) and s)
            time.sleep(0.3)
            shots.append(_grab(d.snapshot.geometry))
            return snap

        def answer(snap, which=Answer.ID_CHECKED_OVER_AGE):
            # Past the double-tap guard, as a cashier reading the next banner would be.
            _wait(lambda: (t := d.snapshot.last_tap) is None or time.monotonic() - t >= DOUBLE_TAP_S)
            x, y, w, h = snap.buttons[which]
            subprocess.run(
                ["xdotool", "mousemove", str(x + w // 2), str(y + h // 2), "click", "1"], check=True, timeout=15
            )
            acks.get(timeout=10)

        d.post(*_events(Decision.APPROVE, "T-4000", low=31.2, high=44.9))
        shot(kind=BannerKind.OK)
        for decision, txn, camera, kind in (
            (Decision.CHECK_ID, "T-4001", "up", BannerKind.ASK_ID),
            (Decision.NO_FACE, "T-4002", "up", BannerKind.NO_FACE),
            (Decision.NO_FACE, "T-4003", "down", BannerKind.CAMERA_DOWN),
        ):
            d.post(*_events(decision, txn, camera))
            snap = shot(kind=kind, transaction_id=txn)
        answer(snap)  # T-4003 answered: T-4002 comes back on top, the Undo for T-4003 below it
        shot(transaction_id="T-4002")
        answer(d.snapshot)
        answer(_wait(lambda: d.snapshot.transaction_id == "T-4001" and d.snapshot))
        shot(kind=BannerKind.RECORDED)
    finally:
        d.close()
        d.join(5)
    width = max(i.width for i in shots)
    sheet = Image.new("RGB", (width * 2 + GAP, (shots[0].height + GAP) * ((len(shots) + 1) // 2)), "white")
    for k, img in enumerate(shots):
        sheet.paste(img, ((k % 2) * (width + GAP), (k // 2) * (img.height + GAP)))
    path = out / "cashier-banners.png"
    sheet.save(path)
    return path


def demo_window(out: Path, seconds: float = 60.0) -> Path:
    """The window as the demo shows it: the first alert it raises, else its first banner."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_app.cli", "run", "--demo"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    first = None
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ids = subprocess.run(
                ["xdotool", "search", "--onlyvisible", "--classname", "agecheck"],
                capture_output=True,
                text=True,
                timeout=15,
            ).stdout.split()
            if ids:
                geo = dict(
                    line.split("=", 1)
                    for line in subprocess.run(
                        ["xdotool", "getwindowgeometry", "--shell", ids[-1]], capture_output=True, text=True, timeout=15
                    ).stdout.split()
                )
                time.sleep(0.4)
                img = _grab((int(geo["X"]), int(geo["Y"]), int(geo["WIDTH"]), int(geo["HEIGHT"])))
                first = first or img
                if img.getpixel((img.width // 2, img.height - 10)) != img.getpixel((img.width // 2, 10)):
                    first = img  # answer buttons at the bottom: an alert
                    break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
    if first is None:
        raise RuntimeError("the demo showed no window")
    path = out / "cashier-window.png"
    first.save(path)
    return path


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "docs")
    out.mkdir(parents=True, exist_ok=True)
    try:
        xs = Xvfb().start()
    except (OSError, RuntimeError) as exc:
        print(f"screenshots: no private screen to draw on: {exc}", file=sys.stderr)
        return 2
    display = xs.display
    assert display is not None, "Xvfb.start() sets the display"
    os.environ["DISPLAY"] = display  # always a private screen: nothing else in the picture
    wm = _window_manager(display)
    try:
        for p in (banners(out), demo_window(out)):
            print(f"wrote {p}")
    finally:
        if wm is not None:
            wm.kill()
            wm.wait(10)
        xs.stop()
    return 0


def _window_manager(display: str):
    """openbox on the private screen when it is installed, as on a till: the pictures show the
    window as a window manager leaves it. None without one."""
    if shutil.which("openbox") is None:
        print("screenshots: openbox is not installed; pictures without a window manager", file=sys.stderr)
        return None
    wm = subprocess.Popen(
        ["openbox"], env=dict(os.environ, DISPLAY=display), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _wait(
        lambda: (
            "window id"
            in subprocess.run(
                ["xprop", "-root", "_NET_SUPPORTING_WM_CHECK"], capture_output=True, text=True, timeout=15
            ).stdout
        )
    )
    return wm


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
