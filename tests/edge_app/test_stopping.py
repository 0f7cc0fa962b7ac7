"""stopping: SIGTERM sets the stop event even when it lands while the main thread holds the
event's own lock (the race that left `agecheck run` deaf to SIGTERM inside `stop.wait()`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# The main thread takes the event's lock (as Event.wait does around its wait) and signals itself
# while holding it: the handler runs right there, on the thread that holds the lock.
SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading
    from {module} import {function} as install
    stop = threading.Event()
    install(stop)
    with stop._cond:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass  # let the interpreter run the handler while the lock is held
    sys.exit(0 if stop.wait(10) else 3)
""")


def _run(module: str, function: str) -> int:
    try:
        return subprocess.run(
            [sys.executable, "-c", SCRIPT.format(module=module, function=function)], timeout=30
        ).returncode
    except subprocess.TimeoutExpired:
        return -1  # deadlocked


def test_a_signal_inside_the_events_lock_still_stops():
    assert _run("edge_app.stopping", "stop_on_signals") == 0


def test_the_naive_handler_deadlocks_there():
    """The control: setting the event inside the handler hangs on that same lock, so the test
    above would catch a handler that went back to it."""
    naive = textwrap.dedent("""
        def naive(stop):
            import signal
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
    """)
    code = naive + SCRIPT.format(module="builtins", function="id").replace("install(stop)", "naive(stop)")
    try:
        rc = subprocess.run([sys.executable, "-c", code], timeout=8).returncode
    except subprocess.TimeoutExpired:
        rc = -1
    assert rc == -1
