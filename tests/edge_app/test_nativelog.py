"""edge_app.nativelog: the native libraries' start-up chatter stays out of stderr, everything
else (including a native library's last words before an abort) still gets through."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from edge_app import nativelog
from tests.helpers import REPO

# Verbatim lines from agecheck's stderr before the filter (issue 18).
NOISE = [
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"W0000 00:00:1796052319.340000   10145 inference_feedback_manager.cc:114] Feedback manager requires a "
    b"model with a single signature inference. Disabling support for feedback tensors.\n",
    b"[ERROR:0@0.022] global obsensor_uvc_stream_channel.cpp:158 getStreamChannelGroup Camera index out of range\n",
    b"[ WARN:0@1.204] global cap_v4l.cpp:914 open VIDEOIO(V4L2:/dev/video0): can't open camera by index\n",
]
KEPT = [
    b"E0000 00:00:1796052319.340000   10145 calculator_graph.cc:887] something real went wrong\n",
    b"F0000 00:00:1796052319.340000   10145 check.cc:1] Check failed: x\n",
    b"Segmentation fault\n",
]


def test_filter_drops_the_noise_and_keeps_the_rest():
    out = io.BytesIO()
    dropped = nativelog.filter_stream(io.BytesIO(b"".join(NOISE + KEPT)), out, show_noise=False)
    assert dropped == len(NOISE)
    assert out.getvalue() == b"".join(KEPT)


def test_at_debug_the_noise_is_shown_marked():
    out = io.BytesIO()
    nativelog.filter_stream(io.BytesIO(b"".join(NOISE)), out, show_noise=True)
    lines = out.getvalue().splitlines(keepends=True)
    assert lines == [nativelog.DEBUG_MARK + n for n in NOISE]


def _child(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, cwd=REPO, timeout=60, env={**os.environ, **env}
    )


def test_a_process_with_the_filter_passes_real_lines_even_when_it_aborts():
    code = (
        "import os, sys\nfrom edge_app import nativelog\nnativelog.install()\n"
        f"os.write(2, {b''.join(NOISE)!r})\n"
        "os.write(2, b'F0000 check.cc:1] Check failed: the last words\\n')\n"
        "print('python stderr', file=sys.stderr, flush=True)\n"
        "os.abort()\n"
    )
    r = _child(code)
    assert r.returncode != 0
    err = r.stderr.decode()
    assert "Check failed: the last words" in err and "python stderr" in err
    assert "XNNPACK" not in err and "inference_feedback_manager" not in err and "Camera index" not in err
    raw = _child(code, AGECHECK_NATIVE_LOG="all").stderr.decode()  # the switch that turns it off
    assert "XNNPACK" in raw and "Camera index out of range" in raw


def test_estimate_prints_no_native_chatter():
    photo = REPO / "edge_app" / "data" / "astronaut.png"
    cmd = [sys.executable, "-m", "edge_app.cli", "estimate", str(photo)]
    env = {k: v for k, v in os.environ.items() if k != "AGECHECK_CONFIG"}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "age " in r.stdout
    assert r.stderr == "", r.stderr
    # Without the filter the same run is noisy: the test above can fail.
    raw = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, timeout=300, env={**env, "AGECHECK_NATIVE_LOG": "all"}
    )
    assert "Created TensorFlow Lite XNNPACK delegate" in raw.stderr
    assert "inference_feedback_manager" in raw.stderr
