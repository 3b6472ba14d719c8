"""Secrets never leave a session: the masking rules, and a real run whose server prints the token."""

from __future__ import annotations

import base64
import os
import subprocess
from urllib.parse import quote

import pytest
from conftest import ROOT, SHARED_GSM8K, require
from test_faults import FAKE_SESSION, fake_argv, fake_env

from gsm8k_bench import results

TOKEN = "hf_EnvToken0123456789abcdef"
FILE_TOKEN = "hf_SavedToken+/=9876543210zyx"


def forms(token: str) -> list[str]:
    """The token as a log, a URL or an auth header would carry it."""
    raw = token.encode()
    return [token, quote(token, safe=""), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(),
            base64.b64encode(b"user:" + raw).decode(), base64.b64encode(b"x" + raw + b"y").decode()]


def leaks(text: str, token: str) -> list[str]:
    """Any run of 10 characters from any form of the token that is still in the text."""
    return [form[i:i + 10] for form in forms(token) for i in range(1, len(form) - 11)
            if form[i:i + 10] in text]


def test_every_form_of_the_token_is_masked():
    environ = {"HF_TOKEN": TOKEN}
    text = " ".join(forms(TOKEN))
    assert leaks(text, TOKEN)  # the check itself finds the token when it is there
    assert not leaks(results.mask(text, environ), TOKEN)


def test_the_saved_token_file_is_a_secret_too(tmp_path):
    (tmp_path / "token").write_text(FILE_TOKEN + "\n")
    masked = results.mask(" ".join(forms(FILE_TOKEN)), {"HF_HOME": str(tmp_path)})
    assert not leaks(masked, FILE_TOKEN)
    assert results.mask(FILE_TOKEN, {"HF_TOKEN_PATH": str(tmp_path / "token")}) == "***"


def test_a_secret_inside_a_longer_one_leaks_no_suffix():
    environ = {"A_TOKEN": "secret-abc", "B_SECRET": "secret-abcdef-ghij"}
    assert results.mask("x secret-abcdef-ghij y secret-abc", environ) == "x *** y ***"


def test_names_match_in_any_case_and_values_nest(tmp_path):
    environ = {"my_api_key": "k3y-value-1", "Hf_Token": "tok-value-2", "HOME": "/root-not-secret",
               "HF_TOKEN_PATH": "/root-not-secret"}  # where a token is kept is no secret
    tree = {"list": ["a k3y-value-1", {"deep": ("tok-value-2",)}], "tok-value-2": 1, "home": "/root-not-secret"}
    assert results.mask_tree(tree, environ) == {"list": ["a ***", {"deep": ["***"]}], "***": 1,
                                                "home": "/root-not-secret"}


def test_short_values_are_not_masked():
    """Policy: values under MIN_SECRET_LEN characters would mask digits and words everywhere."""
    environ = {"X_TOKEN": "12345", "Y_TOKEN": "123456"}
    assert results.MIN_SECRET_LEN == 6
    assert results.mask("port 12345 and 123456", environ) == "port 12345 and ***"


def test_workflow_registers_every_form_with_add_mask():
    out = subprocess.run(["python", "-m", "gsm8k_bench.results", "add-masks"], cwd=ROOT, capture_output=True,
                         text=True, env={"PATH": os.environ["PATH"], "HF_TOKEN": TOKEN, "HF_HOME": "/nonexistent"},
                         timeout=60)
    masks = {line.removeprefix("::add-mask::") for line in out.stdout.splitlines()}
    assert out.stdout.splitlines() and all(line.startswith("::add-mask::") for line in out.stdout.splitlines())
    text = " ".join(forms(TOKEN))
    for value in sorted(masks, key=len, reverse=True):  # as the runner hides them in later log lines
        text = text.replace(value, "***")
    assert TOKEN in masks and not leaks(text, TOKEN)


@pytest.mark.integration
def test_a_server_printing_the_token_leaves_no_trace_in_any_artifact(tmp_path):
    """A real run whose server (tests/fakes/vllm) prints the env token and the saved one, plain,
    URL-encoded and base64, to its log, while loading, and into every completion lm-eval stores."""
    require((SHARED_GSM8K / "test.jsonl").is_file(), f"GSM8K files at {SHARED_GSM8K}")
    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    (hf_home / "token").write_text(FILE_TOKEN)
    emitted = tmp_path / "emitted.log"
    results_dir = tmp_path / "results"
    out = subprocess.run(fake_argv(results_dir), cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=fake_env(HF_TOKEN=TOKEN, HF_HOME=str(hf_home), FAKE_VLLM_READY_AFTER_S="11",
                                      FAKE_VLLM_EMITTED=str(emitted)))
    assert out.returncode == 0, out.stderr[-3000:]
    # The exposure was real: the server printed every form, and the session printed a waiting line.
    assert leaks(emitted.read_text(), TOKEN) and leaks(emitted.read_text(), FILE_TOKEN)
    assert "waiting for the server: 1" in out.stderr
    files = [p for p in results_dir.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {f"{FAKE_SESSION}.json", "server.log", "lm-eval.log"} <= names
    assert any(n.startswith("samples_") for n in names) and any(n.startswith("results_") for n in names)
    for path in files:
        text = path.read_bytes().decode("utf-8", "replace")
        assert not leaks(text, TOKEN) and not leaks(text, FILE_TOKEN), path
    assert "***" in (results_dir / FAKE_SESSION / "server.log").read_text()
    assert not leaks(out.stdout + out.stderr, TOKEN) and not leaks(out.stdout + out.stderr, FILE_TOKEN)
