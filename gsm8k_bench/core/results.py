"""The session JSON: `<results-dir>/<session>.json`, written atomically, also when the session fails;
and the masking of secret values in everything a session writes or prints."""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.core.paths import check_session_name, inside

# The file format lives with the typed model; the report and older callers read these names here.
from gsm8k_bench.core.session_result import SCHEMA_VERSION as SCHEMA_VERSION
from gsm8k_bench.core.session_result import STATUSES as STATUSES
from gsm8k_bench.core.session_result import InvalidResult as InvalidResult
from gsm8k_bench.core.session_result import load

# Values of variables whose names contain one of these words (any case) are secrets.
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL", re.IGNORECASE)
# ...unless the name says the value is where a secret is kept, not the secret (HF_TOKEN_PATH).
WHERE_NAME = re.compile(r"_(PATH|FILE|DIR)$", re.IGNORECASE)
# Shorter values are not masked: hiding "1", "true" or a port number would garble every log, and a
# value that short is no secret worth the name.  The same floor applies to each encoded form.
MIN_SECRET_LEN = 6
MASK = "***"
OUTPUT_MODE = 0o644


def token_files(environ: Mapping[str, str]) -> list[Path]:
    """Where huggingface_hub keeps a token saved by `huggingface-cli login`."""
    if environ.get("HF_TOKEN_PATH"):
        return [Path(environ["HF_TOKEN_PATH"]).expanduser()]
    hf_home = Path(environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser()
    return [hf_home / "token"]


def url_passwords(environ: Mapping[str, str]) -> set[str]:
    """Passwords inside URLs in the environment (GSM8K_HISTORY_URL=postgresql://user:PASSWORD@host/db):
    secrets whatever the variable is called."""
    passwords = set()
    for value in environ.values():
        if "://" in value and "@" in value:
            try:
                password = urlsplit(value).password
            except ValueError:  # not a URL after all
                continue
            if password:
                passwords |= {password, unquote(password)}
    return passwords


def secret_values(environ: Mapping[str, str]) -> list[str]:
    values = {v for k, v in environ.items() if SECRET_NAME.search(k) and not WHERE_NAME.search(k)}
    values |= url_passwords(environ)
    for path in token_files(environ):
        try:
            values.add(path.read_text(encoding="utf-8").strip())
        except (OSError, UnicodeDecodeError):
            pass
    return sorted((v for v in values if len(v) >= MIN_SECRET_LEN), key=len, reverse=True)


def _base64_cores(value: str) -> set[str]:
    """The base64 characters that encode only the value's bytes, at each of the three alignments it can
    have inside a longer encoded string (e.g. `user:token` in a Basic auth header)."""
    raw = value.encode()
    cores = set()
    for shift in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * shift + raw).decode()
            cores.add(text[(8 * shift + 5) // 6:(8 * (shift + len(raw))) // 6])
    return cores


# A JSON string inside a JSON string (lm-eval's samples keep a chat prompt's JSON as a string) escapes twice.
JSON_DEPTH = 2


def _json_escaped(value: str) -> set[str]:
    """The value as it stands inside a JSON string, and inside one nested in another (JSON_DEPTH): quotes,
    backslashes and control characters escaped, non-ASCII escaped (as most writers do) or raw."""
    escaped = set()
    for ascii_only in (True, False):
        text = value
        for _ in range(JSON_DEPTH):
            text = json.dumps(text, ensure_ascii=ascii_only)[1:-1]
            escaped.add(text)
    return escaped


def secret_forms(environ: Mapping[str, str]) -> list[str]:
    """Every form a secret is masked in (plain, URL-encoded, base64, JSON-escaped), longest first: a shorter
    secret that is part of a longer one must not be replaced first and leave the rest showing."""
    forms = set()
    for value in secret_values(environ):
        forms |= {value, quote(value, safe=""), quote_plus(value), *_base64_cores(value), *_json_escaped(value)}
    return sorted((f for f in forms if len(f) >= MIN_SECRET_LEN), key=lambda f: (-len(f), f))


class Masker:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        forms = secret_forms(os.environ if environ is None else environ)
        self._pattern = re.compile("|".join(map(re.escape, forms))) if forms else None

    def text(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern else text

    def tree(self, data: Any) -> Any:
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, Mapping):
            return {self.tree(k): self.tree(v) for k, v in data.items()}
        if isinstance(data, list | tuple | set):
            return [self.tree(v) for v in data]
        return data

    def file(self, path: Path) -> bool:
        """Mask one file in place (atomically, keeping its mode); True if it held a secret."""
        if self._pattern is None:
            return False
        data = path.read_bytes().decode("utf-8", "surrogateescape")
        masked = self.text(data)
        if masked == data:
            return False
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(masked.encode("utf-8", "surrogateescape"))
            os.chmod(tmp, path.stat().st_mode & 0o7777)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def files(self, paths: Iterable[Path]) -> list[Path]:
        """Mask every regular file under the given files and folders; the files that held a secret."""
        changed = []
        for root in paths:
            for path in ([root] if root.is_file() else sorted(root.rglob("*")) if root.is_dir() else []):
                if path.is_file() and not path.is_symlink() and self.file(path):
                    changed.append(path)
        return changed


def mask(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace every secret value (from the environment and the saved HF token) by ***."""
    return Masker(environ).text(text)


def mask_tree(data: Any, environ: Mapping[str, str] | None = None) -> Any:
    return Masker(environ).tree(data)


def result_path(results_dir: Path, session: str) -> Path:
    """`<results_dir>/<session>.json`; a name that is not a session name is refused (it may come from a file)."""
    return inside(results_dir, f"{check_session_name(session)}.json")


def output_folder(folder: Path, option: str) -> Path:
    """An output folder, created; a file in its place, or one that cannot be created or written, is an
    error naming the option that chose it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise BenchError(f"{option} {folder}: a file is in the way (it must be a folder)") from None
    except OSError as exc:
        raise BenchError(f"{option} {folder}: cannot create it ({exc.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BenchError(f"{option} {folder}: not writable")
    return folder


def write_atomic(path: Path, document: Mapping[str, Any]) -> Path:
    """Write via a temporary file in the same folder and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(mask_tree(dict(document)), indent=2, sort_keys=False, default=str) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, OUTPUT_MODE)  # mkstemp makes 0600; results are read by the report and the uploader
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read(path: Path) -> dict[str, Any]:
    """A session JSON, loaded through the typed model (session_result.load), as its JSON object."""
    return load(path).document()


def main(argv: list[str]) -> int:
    """`python -m gsm8k_bench.core.results add-masks`: `::add-mask::` lines for every secret form (GitHub);
    `python -m gsm8k_bench.core.results mask PATH...`: mask files in place before they are uploaded."""
    if argv == ["add-masks"]:
        for form in secret_forms(os.environ):
            print(f"::add-mask::{form}")
        return 0
    if len(argv) >= 2 and argv[0] == "mask":
        for path in Masker().files(Path(p) for p in argv[1:]):
            print(f"masked a secret in {path}")
        return 0
    print("usage: python -m gsm8k_bench.core.results add-masks | mask PATH...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
