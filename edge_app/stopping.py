"""stopping: how a long-running command turns SIGTERM / SIGINT into its stop event.

A Python signal handler runs on the main thread between two bytecodes, so it can interrupt that
thread while it holds the very lock `threading.Event.set` needs (the main loop sits in
`stop.wait()`, which takes the event's lock around its wait). Setting the event from the handler
then deadlocks the process: SIGTERM is never acted on and systemd has to SIGKILL it (seen in
test_missed_scans). So the handler only starts a thread that sets the event; that thread waits
for the lock like any other.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterable


def stop_on_signals(
    stop: threading.Event,
    signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
    log: logging.Logger | None = None,
) -> None:
    """Install handlers that set `stop` (from a helper thread) when one of `signals` arrives."""

    def set_later(name: str) -> None:
        if log is not None:
            log.info("received %s", name)
        stop.set()

    def handler(signum, frame) -> None:  # noqa: ANN001 - the signal module's signature
        threading.Thread(target=set_later, args=(signal.Signals(signum).name,), name="stop-signal", daemon=True).start()

    for sig in signals:
        signal.signal(sig, handler)
