"""Errors a user can act on: each names the file or option at fault and what is allowed."""

from __future__ import annotations

import argparse
import difflib
import re
from collections.abc import Iterable
from typing import NoReturn


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


MAX_VALUE_CHARS = 80


def shorten(value: object, limit: int = MAX_VALUE_CHARS) -> str:
    """repr() of a value for an error message, cut to `limit` characters: a pasted file or a 1 MB
    input must not become a 1 MB message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 12]}... ({len(text)} chars)"


def cut_quoted(message: str, limit: int = MAX_VALUE_CHARS) -> str:
    """Shorten every quoted value in a message built by someone else (argparse, a walk over YAML)."""
    return re.sub(f"'[^']{{{limit},}}'", lambda m: shorten(m.group(0)[1:-1], limit), message)


def unknown_choice(kind: str, value: object, allowed: Iterable[str]) -> str:
    """Message for a name that is not known: a "did you mean" and the full list."""
    allowed = sorted(allowed)
    close = difflib.get_close_matches(str(value)[:200], allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {shorten(value)}{hint} Allowed: {', '.join(allowed)}"


class RaisingArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors raise BenchError: argparse itself would print and sys.exit(2) from
    inside nox, where the session must end with the message instead."""

    def error(self, message: str) -> NoReturn:
        raise BenchError(f"{self.prog}: {cut_quoted(message)}\n{self.format_usage().rstrip()}")
