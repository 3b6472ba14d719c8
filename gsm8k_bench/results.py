"""The session JSON: `<results-dir>/<session>.json`, written atomically, also when the session fails."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
STATUSES = ("passed", "failed", "error")
# Values of variables with these words in their names are masked wherever text leaves the session.
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY|CREDENTIAL", re.IGNORECASE)
MIN_SECRET_LEN = 6


def secret_values(environ: Mapping[str, str]) -> list[str]:
    return sorted((v for k, v in environ.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LEN),
                  key=len, reverse=True)


def mask(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace every secret value found in the environment by ***."""
    for value in secret_values(os.environ if environ is None else environ):
        text = text.replace(value, "***")
    return text


def mask_tree(data: Any, environ: Mapping[str, str] | None = None) -> Any:
    if isinstance(data, str):
        return mask(data, environ)
    if isinstance(data, dict):
        return {k: mask_tree(v, environ) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [mask_tree(v, environ) for v in data]
    return data


def result_path(results_dir: Path, session: str) -> Path:
    return results_dir / f"{session}.json"


def write_atomic(path: Path, document: Mapping[str, Any]) -> Path:
    """Write via a temporary file in the same folder and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(mask_tree(dict(document)), indent=2, sort_keys=False, default=str) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read(path: Path) -> dict[str, Any]:
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or document.get("schema") != SCHEMA_VERSION or "session" not in document:
        raise ValueError(f"{path}: not a gsm8k-bench session JSON (schema {SCHEMA_VERSION})")
    return document
