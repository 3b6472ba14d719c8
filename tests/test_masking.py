"""Secrets never leave a session: the masking rules, and a real run whose server prints the token."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from urllib.parse import quote, quote_plus

import pytest
from conftest import ROOT, SHARED_GSM8K, require
from test_faults import FAKE_SESSION, fake_argv, fake_env

from gsm8k_bench.core import results

TOKEN = "hf_EnvToken0123456789abcdef"
FILE_TOKEN = "hf_SavedToken+/=9876543210zyx"
QUOTED_TOKEN = 'hf_Env"Quoted\\Token0123456789'  # JSON escapes both: `\"` and `\\`


def forms(token: str) -> list[str]:
    """The token as a log, a URL, an auth header or a JSON file (once and twice escaped) would carry it."""
    raw = token.encode()
    return [token, quote(token, safe=""), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(),
            base64.b64encode(b"user:" + raw).decode(), base64.b64encode(b"x" + raw + b"y").decode(),
            json.dumps(token)[1:-1], json.dumps(json.dumps(token))[1:-1]]


def leaks(text: str, token: str) -> list[str]:
    """Any run of 10 characters from any form of the token that is still in the text."""
    return [form[i:i + 10] for form in forms(token) for i in range(1, len(form) - 11)
            if form[i:i + 10] in text]


def test_every_form_of_the_token_is_masked():
    environ = {"HF_TOKEN": TOKEN}
    text = " ".join(forms(TOKEN))
    assert leaks(text, TOKEN)  # the check itself finds the token when it is there
    assert not leaks(results.mask(text, environ), TOKEN)


@pytest.mark.parametrize("token", [TOKEN, FILE_TOKEN, QUOTED_TOKEN])
def test_a_token_in_json_files_is_masked_however_deep_it_is_escaped(token, tmp_path):
    """A real JSON Lines file as lm-eval writes its samples: the token in a string, and in a JSON string
    kept inside a string (a chat prompt)."""
    path = tmp_path / "samples.jsonl"
    rows = [{"resps": [[f"answer {token}"]]}, {"arguments": [[json.dumps([{"content": token}])]]}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert leaks(path.read_text(), token)
    results.Masker({"HF_TOKEN": token}).files([tmp_path])
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"resps": [["answer ***"]]}, {"arguments": [[json.dumps([{"content": "***"}])]]}]


def test_json_escaped_forms_exactly():
    """Quote and backslash once and twice escaped, non-ASCII as \\u escapes or raw: exactly these four."""
    value = 'a"b\\c-\u00e9'
    environ = {"X_TOKEN": value}
    other = {value, quote(value, safe=""), quote_plus(value), *results._base64_cores(value)}
    assert set(results.secret_forms(environ)) - other == {
        'a\\"b\\\\c-\\u00e9', 'a\\"b\\\\c-\u00e9', 'a\\\\\\"b\\\\\\\\c-\\\\u00e9', 'a\\\\\\"b\\\\\\\\c-\u00e9'}
    partial = '"n": "\\"b\\\\c-"'  # a part of the secret is not it
    assert results.mask(f'{{"k": "a\\"b\\\\c-\\u00e9", {partial}}}', environ) == f'{{"k": "***", {partial}}}'
    assert results.mask("a\\tb-123", {"X_TOKEN": "a\tb-123"}) == "***"  # a control character, escaped


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
    out = subprocess.run(["python", "-m", "gsm8k_bench.core.results", "add-masks"], cwd=ROOT, capture_output=True,
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
    # The env token has a quote and a backslash: lm-eval's samples file holds it JSON-escaped.
    out = subprocess.run(fake_argv(results_dir), cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=fake_env(HF_TOKEN=QUOTED_TOKEN, HF_HOME=str(hf_home), FAKE_VLLM_READY_AFTER_S="11",
                                      FAKE_VLLM_EMITTED=str(emitted)))
    assert out.returncode == 0, out.stderr[-3000:]
    # The exposure was real: the server printed every form, and the session printed a waiting line.
    assert leaks(emitted.read_text(), QUOTED_TOKEN) and leaks(emitted.read_text(), FILE_TOKEN)
    assert "waiting for the server: 1" in out.stderr
    files = [p for p in results_dir.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {f"{FAKE_SESSION}.json", "server.log", "lm-eval.log"} <= names
    assert any(n.startswith("samples_") for n in names) and any(n.startswith("results_") for n in names)
    samples = next(p for p in files if p.name.startswith("samples_"))
    assert "#### 42 plain=*** " in samples.read_text()  # the completions lm-eval stored had it
    for path in files:
        text = path.read_bytes().decode("utf-8", "replace")
        assert not leaks(text, QUOTED_TOKEN) and not leaks(text, FILE_TOKEN), path
    assert "***" in (results_dir / FAKE_SESSION / "server.log").read_text()
    assert not leaks(out.stdout + out.stderr, QUOTED_TOKEN) and not leaks(out.stdout + out.stderr, FILE_TOKEN)


def test_the_default_saved_token_is_the_one_under_the_home_cache(tmp_path, monkeypatch):
    # No HF_HOME and no HF_TOKEN_PATH: huggingface_hub keeps the token in ~/.cache/huggingface/token.
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".cache" / "huggingface").mkdir(parents=True)
    (tmp_path / ".cache" / "huggingface" / "token").write_text(FILE_TOKEN + "\n")
    assert results.mask(f"a {FILE_TOKEN} b", {}) == "a *** b"


def test_url_encoded_forms_of_a_token_with_slash_and_space():
    environ = {"DB_PASSWORD": "pa/ss wo+rd"}
    assert results.mask("pa%2Fss%20wo%2Brd | pa%2Fss+wo%2Brd | pa/ss wo+rd", environ) == "*** | *** | ***"


@pytest.mark.parametrize(("encoded", "masked"), [
    # base64 of the token (12 bytes: 16 characters) with 0, 1 and 2 bytes before it, standard and URL-safe:
    # every character that encodes only the token's bits is hidden, the others stay.
    ("aGZfYWJjZGVmZ2hpIQ==", "***IQ=="),
    ("__9oZl9hYmNkZWZnaGk=", "__9***k="),
    ("P2hmX2FiY2RlZmdoaSE=", "P2***SE="),
    ("P___aGZfYWJjZGVmZ2hp", "P___***"),
    ("Pz9oZl9hYmNkZWZnaGkh", "Pz9***kh"),
    ("Pz___2hmX2FiY2RlZmdoaQ==", "Pz___2***Q=="),
])
def test_base64_is_masked_at_every_alignment_exactly(encoded, masked):
    assert results.mask(encoded, {"HF_TOKEN": "hf_abcdefghi"}) == masked


SECRET = "s3cret-value-42"


def masking_env(monkeypatch, tmp_path):
    """The process environment `python -m gsm8k_bench.core.results mask` reads: one secret, no saved token."""
    monkeypatch.setenv("GSM8K_TEST_TOKEN", SECRET)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))


def test_mask_command_masks_files_and_folders_in_place(tmp_path, monkeypatch, capsys):
    masking_env(monkeypatch, tmp_path)
    logs = tmp_path / "logs"
    (logs / "deep").mkdir(parents=True)
    (logs / "deep" / "server.log").write_bytes(b"start \xff\xfe " + SECRET.encode() + b" end\n")
    (logs / "deep" / "server.log").chmod(0o640)
    (logs / "clean.log").write_text("nothing here\n")
    outside = tmp_path / "outside.txt"
    outside.write_text(f"kept {SECRET}\n")
    (logs / "link.txt").symlink_to(outside)  # a link's target is not in the folder: left alone
    single = tmp_path / "single.json"
    single.write_text(f'{{"t": "{SECRET}"}}')
    clean_stat = (logs / "clean.log").stat()

    assert results.main(["mask", str(logs), str(single), str(tmp_path / "missing")]) == 0
    out = capsys.readouterr()
    assert out.out == f"masked a secret in {logs / 'deep' / 'server.log'}\nmasked a secret in {single}\n"
    assert out.err == ""
    assert (logs / "deep" / "server.log").read_bytes() == b"start \xff\xfe *** end\n"
    assert (logs / "deep" / "server.log").stat().st_mode & 0o7777 == 0o640
    assert single.read_text() == '{"t": "***"}'
    assert outside.read_text() == f"kept {SECRET}\n" and (logs / "link.txt").is_symlink()
    assert (logs / "clean.log").stat().st_ino == clean_stat.st_ino  # not rewritten
    assert sorted(os.listdir(logs)) == ["clean.log", "deep", "link.txt"]
    assert os.listdir(logs / "deep") == ["server.log"]


def test_mask_command_keeps_its_temporary_file_beside_the_masked_one(tmp_path, monkeypatch, capsys):
    # Made anywhere else, the final rename could cross filesystems and stop being atomic.
    import tempfile

    masking_env(monkeypatch, tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-temp-dir"))
    (tmp_path / "a.log").write_text(SECRET)
    assert results.main(["mask", str(tmp_path / "a.log")]) == 0
    assert (tmp_path / "a.log").read_text() == "***"
    assert capsys.readouterr().out == f"masked a secret in {tmp_path / 'a.log'}\n"


def test_mask_command_without_secrets_changes_nothing(tmp_path, monkeypatch, capsys):
    for name in [n for n in os.environ if results.SECRET_NAME.search(n)]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
    (tmp_path / "a.log").write_text(f"x {SECRET}")
    assert results.main(["mask", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "" and (tmp_path / "a.log").read_text() == f"x {SECRET}"


def test_a_failed_mask_leaves_the_file_and_no_temporary_file(tmp_path, monkeypatch):
    masking_env(monkeypatch, tmp_path)
    (tmp_path / "a.log").write_text(SECRET)

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="No space left"):
        results.main(["mask", str(tmp_path / "a.log")])
    assert os.listdir(tmp_path) == ["a.log"] and (tmp_path / "a.log").read_text() == SECRET


def test_add_masks_prints_one_line_per_form(monkeypatch, tmp_path, capsys):
    for name in [n for n in os.environ if results.SECRET_NAME.search(n)]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
    monkeypatch.setenv("MY_SECRET", "abcdef")
    assert results.main(["add-masks"]) == 0
    # the base64 cores of 6 or more characters at the three alignments and the value (URL-encoded, it is the
    # value itself), longest first
    assert capsys.readouterr().out == ("::add-mask::YWJjZGVm\n::add-mask::FiY2RlZ\n::add-mask::hYmNkZW\n"
                                       "::add-mask::abcdef\n")


@pytest.mark.parametrize("argv", [[], ["mask"], ["add-masks", "x"], ["masks", "x"], ["x", "mask"], ["ADD-MASKS"]])
def test_results_command_usage(argv, capsys):
    assert results.main(argv) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == "usage: python -m gsm8k_bench.core.results add-masks | mask PATH...\n"
