"""agecheck till application: camera → faces → age model → policy → events."""

import os as _os

# MediaPipe and TensorFlow print start-up banners on stderr that a cashier's log does not need.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_os.environ.setdefault("GLOG_minloglevel", "2")

__version__ = "0.1.0"
