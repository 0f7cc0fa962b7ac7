"""agecheck till application: camera → faces → age model → policy → events."""

__version__ = "0.1.0"
