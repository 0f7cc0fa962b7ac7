"""Errors: the base class of every error a command may end on. Library code raises a subclass with
a message worded for the person at the keyboard; `edge_app.cli` is the one place that prints it
(as `agecheck COMMAND: message`) and turns it into the process's exit status."""

from __future__ import annotations


class AgecheckError(Exception):
    """An error a command ends on. `exit_code` is the process status `agecheck` returns for it:
    2 for what the user gave (arguments, config, a file), 1 for what went wrong running."""

    exit_code: int = 1


class UsageError(AgecheckError):
    """Bad arguments, or a setting the command refuses (an unsafe dashboard host, a short password)."""

    exit_code = 2


class RunError(AgecheckError):
    """A command could not do its work (no broker could be started, no usable photo)."""
