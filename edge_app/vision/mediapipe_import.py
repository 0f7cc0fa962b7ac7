"""Importing MediaPipe: kept out of module import time (it is heavy) and, for a process that will
never use TensorFlow, without letting mediapipe's package import pull TensorFlow in."""

from __future__ import annotations

import importlib.abc
import sys
import threading
from types import ModuleType


class _NoTensorFlow(importlib.abc.MetaPathFinder):
    """Makes `import tensorflow...` fail as on a till, where TensorFlow is not installed."""

    def find_spec(self, name: str, path=None, target=None):  # noqa: ANN001 - importlib's signature
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden while importing mediapipe)", name=name)
        return None


_MP_IMPORT_LOCK = threading.Lock()


def import_mediapipe(hide_tensorflow: bool = False) -> ModuleType:
    """`import mediapipe`, optionally without TensorFlow.

    mediapipe 0.10.21's package import runs `mediapipe.tasks`, whose optional_dependencies try
    `from tensorflow.tools.docs import doc_controls` (a docs decorator) and use a no-op when that
    fails. Where TensorFlow is installed (the training and test environment) that one line
    imports all of it: about 5 s and 600 MB more for the till service, which never uses it. So
    `hide_tensorflow` hides it for the duration of the import, giving exactly the till's
    behaviour. Only a process that will never import TensorFlow may ask for that (the
    `agecheck run` service does): once mediapipe's native libraries are loaded without it, a
    later `import tensorflow` in the same process was seen to spin forever in its extension
    loader. A process that has already imported TensorFlow (training) gets a plain import."""
    with _MP_IMPORT_LOCK:
        if not hide_tensorflow or "mediapipe" in sys.modules or "tensorflow" in sys.modules:
            import mediapipe  # deferred on purpose: this function is how mediapipe is imported

            return mediapipe
        hider = _NoTensorFlow()
        # A failed import leaves nothing in sys.modules, so a later `import tensorflow` (the
        # training code after building its face pipeline) loads the real one.
        sys.meta_path.insert(0, hider)
        try:
            import mediapipe
        finally:
            sys.meta_path.remove(hider)
        return mediapipe
