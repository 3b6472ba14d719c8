"""A JSON file from elsewhere (a downloaded artifact, a reference, a results folder), read with bounds: its
size and its nesting are limited, and every way it can fail is one ValueError naming the file and what is
allowed, never a RecursionError or a MemoryError from deep inside the parser."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

# The deepest the project's own files go is about 6 levels (lm-eval's generation settings inside a
# session JSON's config); 64 leaves room for any of lm-eval's records and stops a nesting bomb long before
# Python's recursion limit.
MAX_DEPTH = 64


class JsonInputError(ValueError):
    """A JSON file that cannot be read within the bounds; the message names the file."""


# Over the parsed file's text: escapes out (an escaped quote is no quote), then every string (the odd
# pieces between quotes), then all but the brackets.
_ESCAPE = re.compile(r"\\.", re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")


def _depth_over(text: str, limit: int) -> bool:
    """Whether valid JSON text nests deeper than `limit` arrays and objects: each pass removes the
    innermost ones, so what is left after `limit` passes was deeper.  On the text, in C: walking the
    parsed objects in Python was most of the time a session JSON took to read."""
    nesting = _NOT_BRACKET.sub("", "".join(_ESCAPE.sub("", text).split('"')[::2]))
    for _ in range(limit):
        if not nesting:
            return False
        nesting = _INNERMOST.sub("", nesting)
    return bool(nesting)


def read(path: Path, max_bytes: int) -> Any:
    """The parsed content of a JSON file of at most max_bytes, nested at most MAX_DEPTH levels."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise JsonInputError(f"{path}: {size} bytes, more than the {max_bytes} allowed for this file")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise JsonInputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise JsonInputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    too_deep = JsonInputError(f"{path}: JSON nested more than {MAX_DEPTH} levels deep (the most allowed)")
    try:
        data = json.loads(text)
    except RecursionError:
        raise too_deep from None
    except json.JSONDecodeError as exc:
        raise JsonInputError(f"{path}: JSON syntax error: {exc}") from None
    if _depth_over(text, MAX_DEPTH):
        raise too_deep
    return data
