"""The session JSON on disk: its path, its exact text, atomic replacement, and reading it back."""

from __future__ import annotations

import json
import os

import pytest

from gsm8k_bench.core import results


def test_result_path_and_exact_text(tmp_path):
    path = results.result_path(tmp_path / "new" / "dir", "gsm8k-a-cpu-vllm-fp16-tp1")
    assert path == tmp_path / "new" / "dir" / "gsm8k-a-cpu-vllm-fp16-tp1.json"
    document = {"schema": 1, "session": "s", "status": "passed", "artifacts": {"work_dir": tmp_path},
                "samples": [{"doc_id": 1, "question": "é", "response": "ü"}]}
    assert results.write_atomic(path, document) == path
    written = {**document, "artifacts": {"work_dir": str(tmp_path)}}
    assert path.read_text(encoding="utf-8") == json.dumps(written, indent=2, sort_keys=False) + "\n"
    assert os.listdir(path.parent) == [path.name]
    assert results.read(path) == written


def test_a_rewrite_replaces_the_whole_file(tmp_path):
    path = tmp_path / "s.json"
    results.write_atomic(path, {"schema": 1, "session": "s", "samples": list(range(1000))})
    results.write_atomic(path, {"schema": 1, "session": "s"})
    assert json.loads(path.read_text()) == {"schema": 1, "session": "s"}


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    (tmp_path / "s.json").mkdir()  # os.replace cannot put a file over a directory
    with pytest.raises(OSError):
        results.write_atomic(tmp_path / "s.json", {"schema": 1, "session": "s"})
    assert os.listdir(tmp_path) == ["s.json"]


@pytest.mark.parametrize("text", ['{"hello": 1}', '[1, 2]', '{"schema": 2, "session": "s"}', '{"schema": 1}'])
def test_reading_something_else_is_refused(tmp_path, text):
    path = tmp_path / "other.json"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        results.read(path)
    assert str(info.value) == f"{path}: not a gsm8k-bench session JSON (schema 1)"


def test_statuses_and_schema_are_pinned():
    assert results.SCHEMA_VERSION == 1 and results.STATUSES == ("passed", "failed", "error")


def test_the_temporary_file_is_made_beside_the_result(tmp_path, monkeypatch):
    # Made anywhere else, the final rename could cross filesystems and stop being atomic.
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-temp-dir"))
    path = results.write_atomic(tmp_path / "out" / "s.json", {"schema": 1, "session": "s", "status": "error"})
    assert results.read(path)["session"] == "s"
