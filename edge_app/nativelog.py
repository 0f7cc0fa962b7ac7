"""Native stderr filter: owns file descriptor 2 of an `agecheck` process, so the start-up chatter
of the native libraries stays out of the journal.

TFLite ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU."), absl inside MediaPipe
("W0000 ... inference_feedback_manager.cc ...") and OpenCV ("[ERROR:0@...] ... Camera index out
of range" on every camera retry) write straight to fd 2 from C++, at levels no environment
variable turns down. So `install()` points fd 2 at a pipe read by a small filter process that
drops those known lines (or shows them, marked, at logging level DEBUG) and passes every other
line through untouched. Python's own output (logging, tracebacks, faulthandler) keeps writing to
the real stderr directly.

The filter is a process, not a thread: if a native library aborts the service, the filter still
drains the pipe, so the library's last words reach the journal. It ignores SIGINT and SIGTERM
(systemd signals the whole cgroup on stop) and exits when the last writer has gone.
"""

from __future__ import annotations

import faulthandler
import os
import re
import signal
import subprocess
import sys
from typing import BinaryIO

# Lines that say nothing an installer or a cashier can act on. Kept narrow on purpose: anything
# not listed here, including other native warnings and errors, is passed through.
NOISE = (
    re.compile(rb"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.\s*$"),
    re.compile(rb"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR\s*$"),
    re.compile(rb"^[IW]\d{4} [\d:. ]+\d+ inference_feedback_manager\.cc:\d+\] "),
    # OpenCV's own logger, e.g. "[ERROR:0@0.022] global obsensor_uvc_stream_channel.cpp:158
    # getStreamChannelGroup Camera index out of range" or "[ WARN:0@1.2] global cap_v4l.cpp:...":
    # the capture module logs the camera going down and up itself, once.
    re.compile(rb"^\[ ?(ERROR|WARN|INFO):\d+@[\d.]+\] global (obsensor_|cap_)\S+:\d+ "),
)

DEBUG_MARK = b"native (debug): "

_installed = False


def is_noise(line: bytes) -> bool:
    return any(p.search(line) for p in NOISE)


def filter_stream(src: BinaryIO, dst: BinaryIO, show_noise: bool) -> int:
    """Copy src to dst line by line, without the noise (or with it marked when show_noise).
    Returns how many lines it held back."""
    dropped = 0
    for line in src:
        if is_noise(line):
            if not show_noise:
                dropped += 1
                continue
            line = DEBUG_MARK + line
        dst.write(line)
        dst.flush()
    return dropped


def install(show_noise: bool = False) -> bool:
    """Put the filter between fd 2 and the real stderr for the rest of this process. Call once,
    from a command-line entry point, before the native libraries load. Returns False when
    AGECHECK_NATIVE_LOG=all asks for the raw stream (or it is already installed)."""
    global _installed
    if _installed or os.environ.get("AGECHECK_NATIVE_LOG", "").lower() == "all":
        return False
    real = os.dup(2)
    read_end, write_end = os.pipe()
    args = [sys.executable, "-m", "edge_app.nativelog"] + (["--show-noise"] if show_noise else [])
    subprocess.Popen(args, stdin=read_end, stdout=real, stderr=real, close_fds=True)
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    os.set_inheritable(real, False)
    sys.stderr.flush()
    sys.stderr = open(
        real, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8", errors="backslashreplace", closefd=False
    )
    if faulthandler.is_enabled():
        faulthandler.enable(sys.stderr)
    _installed = True
    return True


def main(argv: list[str] | None = None) -> int:
    # The service's stop signals are for the service; this process leaves when the pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    show = "--show-noise" in (sys.argv[1:] if argv is None else argv)
    filter_stream(sys.stdin.buffer, sys.stdout.buffer, show)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
