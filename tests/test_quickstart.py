"""README's quick start on a stock Debian 12, as a newcomer runs it.

The machine is the project's plain Debian 12 image (gsm8k_bench/serving/images.py: debootstrap, python3 with venv
and pip, nothing else; built once, then kept by the engine), with the repository's tracked files copied in
and host networking.  The commands are read from README.md, never retyped here:

- the system pip refuses to install (PEP 668): the reason the set-up makes a virtual environment;
- both set-up commands run verbatim, the second (`nox -s setup`) into the checkout's own fresh cache, as on
  a newcomer's machine: it builds the shared lm-eval and vLLM CPU environments and converts the CPU model
  (the host's cache is not mounted: its environments' stamps name the host's interpreter);
- the activated nox lists the sessions (`nox -l`);
- the main job runs verbatim with `--dry-run` appended: the whole plan, with the GSM8K files mounted
  where the README's `../shared/gsm8k` points.

pip inside sees this machine's pip configuration (read-only): its settings, certificates, local indexes
and cache, as a newcomer's machine has its own.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import ROOT, SHARED_GSM8K, require, require_module
from test_docker import client  # noqa: F401 - client: the engine fixture

from gsm8k_bench.serving import images, venvs

pytestmark = pytest.mark.docker

HOME = "/root"
CHECKOUT = f"{HOME}/gsm8k-bench"
PIP_CONFIG_FILES = ("/etc/pip.conf", "/etc/xdg/pip", "~/.config/pip", "~/.pip")
BUDGET_S = 600  # the run in the container, mostly `nox -s setup` (about 3 min here; .ci/run's time is shared)


def readme_block(after: str) -> list[str]:
    """The lines of README's first ```bash block after the line starting with `after`."""
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Quick start")
    start = text.index(f"\n{after}", start)
    match = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert match, f"README.md: no bash block after {after!r}"
    return match.group(1).splitlines()


def without_comment(line: str) -> str:
    return line.split("  #", 1)[0].strip()


def host_pip_config() -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """PIP_* variables and, read-only at their own paths, the files they and pip's config files name."""
    environment = {key: value for key, value in os.environ.items() if key.startswith("PIP_")}
    files = [Path(p).expanduser() for p in PIP_CONFIG_FILES if Path(p).expanduser().exists()]
    cache = Path("~/.cache/pip").expanduser()
    volumes = {str(path): {"bind": str(path), "mode": "ro"} for path in files}
    if cache.is_dir():
        volumes[str(cache)] = {"bind": f"{HOME}/.cache/pip", "mode": "ro"}
    texts = [*environment.values(), *(p.read_text() for f in files for p in [f, *f.glob("*")] if p.is_file())]
    for text in texts:
        for named in re.findall(r"(?:file://)?(/[^\s'\"]+)", text):
            path = Path(named)
            # A local index's pages link to files beside its `simple/` folder.
            path = path.parent if path.name == "simple" else path
            if path.exists() and str(path) not in volumes:
                volumes[str(path)] = {"bind": str(path), "mode": "ro"}
    return environment, volumes


def tracked_files_tar() -> bytes:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in filter(None, names):
            if (ROOT / name).exists():  # a file deleted in the work tree is not part of the checkout
                tar.add(ROOT / name, arcname=f"gsm8k-bench/{name}", recursive=False)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def stock_image(client):  # noqa: F811
    """The stock Debian image, built once into the engine (root and debootstrap), then reused."""
    try:
        client.images.get(images.STOCK_PYTHON_IMAGE)
    except require_module("docker").errors.ImageNotFound:
        require(os.geteuid() == 0 and shutil.which("debootstrap") is not None,
                "root and debootstrap, to build the stock Debian image once")
        images.build_stock_python_image(images.STOCK_PYTHON_IMAGE)
    return images.STOCK_PYTHON_IMAGE


def test_readme_set_up_works_on_a_stock_debian_python(client, stock_image):  # noqa: F811
    require(SHARED_GSM8K.is_dir(), f"GSM8K files in {SHARED_GSM8K} (GSM8K_DATASET_DIR)")
    create_venv, activate_and_setup = (without_comment(line) for line in readme_block("Setup"))
    assert activate_and_setup.split(" && ")[-1] == "nox -s setup"
    main_job, = (without_comment(line) for line in readme_block("The main job"))
    session = shlex.split(main_job)[2]
    script = "\n".join([
        "set -eo pipefail",
        f"cd {CHECKOUT}",
        # The stock machine: its own pip refuses a system-wide install.
        "if python3 -m pip install -e . >/tmp/system-pip.log 2>&1; then echo 'system pip installed'; exit 3; fi",
        "grep -q externally-managed-environment /tmp/system-pip.log && echo 'system pip refused (PEP 668)'",
        create_venv,
        activate_and_setup,
        "nox -l",
        f"{main_job} --dry-run",
    ])
    environment, volumes = host_pip_config()
    volumes[str(SHARED_GSM8K)] = {"bind": f"{HOME}/shared/gsm8k", "mode": "ro"}
    container = client.containers.create(
        stock_image, command=["bash", "-c", script], working_dir=HOME, network_mode="host",
        environment={**environment, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}, volumes=volumes,
        labels={"gsm8k-bench.test": "quickstart"})
    try:
        assert container.put_archive(HOME, tracked_files_tar())
        container.start()
        status = container.wait(timeout=BUDGET_S)
        output = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert status["StatusCode"] == 0, output[-6000:]
    assert "system pip refused (PEP 668)" in output
    assert f"ready: nox -s {session}" in output, output[-3000:]  # nox -s setup built everything
    assert re.search(rf"^[*-] {re.escape(session)} (\[[^]]*\] )?-> ", output, re.M), output[-3000:]  # nox -l
    # The dry run planned the README's session on the venv's nox: the shared environments in the
    # checkout's cache, the GSM8K files where the README points.
    assert f"{CHECKOUT}/.cache/envs/{venvs.LM_EVAL.name}/bin/python" in output, output[-3000:]
    assert f"dataset: {HOME}/shared/gsm8k" in output, output[-3000:]
    assert f"result: {CHECKOUT}/results/{session}.json" in output, output[-3000:]
