""".pre-commit-config.yaml runs what `nox -s lint` and the tests check, with the same tools and flags, on
exactly the files they check."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from test_scripts import SCRIPTS
from test_workflows import WORKFLOWS

CONFIG = ROOT / ".pre-commit-config.yaml"
# Each hook's command: lint's ruff, test_scripts' and test_slurm's shellcheck, test_workflows' linters.
COMMANDS = {"ruff": ["ruff", "check", "--force-exclude"], "shellcheck": ["shellcheck", "-x"],
            "actionlint": ["actionlint"], "zizmor": ["zizmor", "--offline"]}


def hooks():
    config = yaml.safe_load(CONFIG.read_text())
    repo, = config["repos"]
    assert repo["repo"] == "local"  # the test extra's tools: nothing fetched when a hook runs
    return {hook["id"]: hook for hook in repo["hooks"]}


def tracked_files():
    # Tracked files and new ones not ignored: what the next commit may hold.
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def selected(hook):
    """The tracked files pre-commit hands the hook (it searches each path with the `files` pattern)."""
    return {path for path in tracked_files() if re.search(hook["files"], path)}


def test_hooks_run_the_checks_tools_with_their_flags():
    found = hooks()
    assert set(found) == set(COMMANDS)
    for hook_id, hook in found.items():
        assert hook["language"] == "system" and shlex.split(hook["entry"]) == COMMANDS[hook_id]
        assert shutil.which(COMMANDS[hook_id][0]), f"{COMMANDS[hook_id][0]} comes with the test extra"


def test_ruff_hook_sees_the_files_lint_checks():
    listed = subprocess.run(["ruff", "check", "--show-files", "."], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    linted = {str(Path(path).relative_to(ROOT)) for path in listed}
    assert linted and selected(hooks()["ruff"]) == linted


def test_shellcheck_hook_sees_the_scripts_the_tests_check():
    checked = {str(p.relative_to(ROOT)) for p in SCRIPTS} | {".ci/run", "ci/slurm-cluster.sh"}
    assert selected(hooks()["shellcheck"]) == checked


@pytest.mark.parametrize("hook_id", ["actionlint", "zizmor"])
def test_workflow_hooks_see_every_workflow(hook_id):
    workflows = {str(p.relative_to(ROOT)) for p in WORKFLOWS.iterdir()}
    assert workflows and selected(hooks()[hook_id]) == workflows
