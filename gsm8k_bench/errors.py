"""Errors a user can act on: each names the file or option at fault and what is allowed."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BenchError(Exception):
    """A failure with a message meant for the user, printed without a traceback."""


class ConfigError(BenchError):
    """matrix.yaml (or another input file) is malformed; the message names file, line and key."""


class ServerError(BenchError):
    """The inference server died, never became ready, or could not be started."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


class EvalError(BenchError):
    """lm-eval failed or produced no metrics."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


def unknown_choice(kind: str, value: object, allowed: Iterable[str]) -> str:
    """Message for a name that is not known: a "did you mean" and the full list."""
    allowed = sorted(allowed)
    close = difflib.get_close_matches(str(value), allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {value!r}{hint} Allowed: {', '.join(allowed)}"
