"""Demo: `agecheck run --demo`, the service on a machine with no camera, no broker and nothing
configured: the simulation kit (`devtools.sim`: a local broker, a sample video deleted on exit,
a simulated POS, a simulated second cashier that answers every other alert) around the real
service, the cashier window when there is a screen ($DISPLAY), and a printer that shows each
check, answer and integrity event as it happens, until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TextIO

from edge_app.cashier.isolated import attach
from edge_app.config import Config, ConfigError, MQTTConfig, TLSConfig
from edge_app.core import events
from edge_app.core.words import ACK_VIA_LABELS, DECISION_HINT, DECISION_SHORT, AckVia
from edge_app.devtools.sim import (
    SALE_AFTER_S,
    SCAN_EVERY_S,
    LocalBroker,
    SimulatedCashier,
    SimulatedPos,
    make_demo_video,
)
from edge_app.errors import RunError
from edge_app.till.plugins import Listener
from edge_app.till.service import Service, install_signal_handlers

log = logging.getLogger(__name__)


class Printer(Listener):
    """One line per check (and per integrity event) on stdout, as it happens."""

    def __init__(self, out: TextIO):
        self.out = out
        self.count = 0
        self._lock = threading.Lock()

    def on_event(self, ev: events.Event) -> None:
        clock = time.strftime("%H:%M:%S")
        if isinstance(ev, events.CheckEvent):
            self.count += 1
            age = f"age {ev.age:4.1f} (band {ev.age_band})" if ev.age is not None else "no usable face"
            took = "?" if ev.latency_ms.total is None else f"{ev.latency_ms.total:.0f}"
            hint = DECISION_HINT[ev.decision]
            line = (
                f"{clock} check {self.count:3d}  txn {ev.transaction_id}  {DECISION_SHORT[ev.decision]:8s} "
                f"{age}  -> {hint}   [{ev.frames_used}/{ev.frames_seen} frames, "
                f"{took} ms]"
            )
        elif isinstance(ev, events.AckEvent):
            # `via` is optional and free: another display may send a word this build has no label for.
            line = (
                f"{clock} answer     txn {ev.transaction_id}  {ev.answer}  "
                f"({ACK_VIA_LABELS[ev.via] if isinstance(ev.via, AckVia) else ev.via or 'another display'})"
            )
        elif isinstance(ev, events.IntegrityEvent):
            line = (
                f"{clock} integrity  txn {ev.transaction_id} sold {ev.seconds_after_alert:.1f} s after "
                f"an alert with no ID check recorded ({ev.reason})"
            )
        else:
            return
        with self._lock:
            print(line, file=self.out, flush=True)


def demo_config(cfg: Config, video: Path, port: int, state_dir: Path) -> Config:
    """The user's config (or the defaults) pointed at the demo's camera, broker and outbox."""
    return dataclasses.replace(
        cfg,
        camera=dataclasses.replace(cfg.camera, source=str(video), loop=True, reconnect_max_seconds=2.0),
        mqtt=MQTTConfig(
            host="127.0.0.1", port=port, keepalive=30, client_id=None, tls=TLSConfig(), reconnect_max_seconds=2.0
        ),
        outbox=dataclasses.replace(cfg.outbox, path=str(state_dir / "outbox.sqlite3")),
        triggers=dataclasses.replace(cfg.triggers, http_port=None, stdin=False),
        # The window when there is a screen to show it on; its own outbox is not used in the
        # service, but the path must not point at the user's real one.
        display=dataclasses.replace(
            cfg.display, enabled=bool(os.environ.get("DISPLAY")), outbox_path=str(state_dir / "display-outbox.sqlite3")
        ),
    )


def _service(dcfg: Config, service_cls):
    """The service, with the cashier window when there is a screen; and a function that says,
    once the service has started, where the window is (or why there is none)."""
    if not dcfg.display.enabled:
        return (
            service_cls(dcfg),
            lambda: (
                "no screen here: run it with DISPLAY set (on the desktop, or "
                "`xvfb-run -a scripts/run`) to see the cashier window"
            ),
        )

    failed: list[str] = []

    def window(svc):
        try:
            return attach(svc)
        except ConfigError as exc:  # a $DISPLAY that cannot be opened: the demo goes on without it
            failed.append(str(exc).split(";")[0])
            return None

    return (
        service_cls(dcfg, plugins=[window]),
        lambda: (
            f"no cashier window: {failed[0]}"
            if failed
            else f"the cashier window is on display {os.environ.get('DISPLAY')}: click its buttons"
        ),
    )


def main(args: argparse.Namespace, cfg: Config, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    stop = threading.Event()
    install_signal_handlers(stop)
    with tempfile.TemporaryDirectory(prefix="agecheck-demo-") as tmp:
        tmpdir = Path(tmp)
        try:
            broker = LocalBroker().start()
        except (FileNotFoundError, RuntimeError) as exc:
            raise RunError(f"cannot start a local MQTT broker: {exc}") from None
        service = pos = cashier = None
        printer = Printer(out)
        try:
            video = make_demo_video(tmpdir / "astronaut-demo.avi", fps=cfg.camera.fps)
            dcfg = demo_config(cfg, video, broker.port, tmpdir)
            service, window_note = _service(dcfg, Service)
            service.listen(printer)
            service.start()
            pos = SimulatedPos(broker.host, broker.port, dcfg.store_id, dcfg.till_id).start()
            cashier = SimulatedCashier(broker.host, broker.port, dcfg.store_id, dcfg.till_id).start()
            print(
                f"agecheck demo: broker 127.0.0.1:{broker.port}, camera = a sample video of the public-domain "
                f"NASA astronaut portrait (8 s face, 4 s empty till), simulated POS scans alcohol every "
                f"{SCAN_EVERY_S:.0f} s and closes the sale {SALE_AFTER_S:.1f} s later; a simulated cashier "
                f"answers every other alert, the rest are yours ({window_note()}). Watch the events with:\n"
                f"  mosquitto_sub -h 127.0.0.1 -p {broker.port} -t 'agecheck/#' -v\n"
                f"Ctrl-C to stop.",
                file=out,
                flush=True,
            )
            service.run(stop)
        finally:
            if cashier is not None:
                cashier.stop()
            if pos is not None:
                pos.stop()
            if service is not None:
                service.stop()
            broker.close()
        print(f"agecheck demo: stopped after {printer.count} check(s).", file=out, flush=True)
    return 0
