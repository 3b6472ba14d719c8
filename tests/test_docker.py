"""The Docker launcher on a real engine (DOCKER_HOST, e.g. docker/private-engine.sh) with the CPU image.

Nothing is ever pulled here: every run uses --pull never, and the image is built locally by
docker/build-cpu-image.sh.  After each test no container labelled for a session is left.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import ROOT, SHARED_GSM8K, require, require_module
from test_integration import SESSION, env, kill_during_eval, nox_argv

from gsm8k_bench.serving.containers import SESSION_LABEL
from gsm8k_bench.serving.images import CPU_IMAGE

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def client():
    docker = require_module("docker")
    address = os.environ.get("DOCKER_HOST")
    require(bool(address), "DOCKER_HOST pointing at an engine (docker/private-engine.sh start DIR)")
    try:
        client = docker.DockerClient(base_url=address, version="auto")
    except docker.errors.DockerException as exc:
        require(False, f"a Docker engine at {address}: {exc}")
    try:
        client.images.get(CPU_IMAGE)
    except docker.errors.ImageNotFound:
        require(False, f"image {CPU_IMAGE} (docker/build-cpu-image.sh)")
    yield client
    client.close()


def labelled(client) -> list:
    return client.containers.list(all=True, filters={"label": SESSION_LABEL})


@pytest.fixture(autouse=True)
def no_container_left(client):
    yield
    assert labelled(client) == []


def run_args(results_dir, *extra):
    return nox_argv(SESSION, "--launcher", "docker", "--pull", "never", "--dataset-dir", str(SHARED_GSM8K),
                    "--results-dir", str(results_dir), *extra)


def test_cpu_default_in_a_container_end_to_end(client, tmp_path):
    # A container an earlier crashed run left behind is removed before the new one starts.
    leftover = client.containers.create(CPU_IMAGE, command=["python3", "-c", "import time; time.sleep(600)"],
                                        labels={SESSION_LABEL: SESSION}, network_mode="none")
    leftover.start()
    out = subprocess.run(run_args(tmp_path, "--limit", "5"), cwd=ROOT, env=env(), capture_output=True,
                         text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    doc = json.loads((tmp_path / f"{SESSION}.json").read_text())
    assert doc["status"] == "passed" and doc["metrics"]["n"] == 5
    config = doc["config"]
    assert config["launcher"] == "docker" and config["image"] == CPU_IMAGE
    assert config["server"]["image_id"] == client.images.get(CPU_IMAGE).id
    assert config["container"]["mounts"][0].endswith(":/root/.cache/huggingface")
    assert config["dtype_used"] == "bfloat16"
    assert len(doc["samples"]) == 5
    with pytest.raises(require_module("docker").errors.NotFound):
        client.containers.get(leftover.id)


def test_container_killed_during_eval_fails_within_60_s(client, tmp_path):
    def kill_container():
        (container,) = labelled(client)
        container.kill()

    returncode, _ = kill_during_eval(run_args(tmp_path, "--limit", "60"), tmp_path / SESSION, kill_container)
    assert returncode != 0
    doc = json.loads((tmp_path / f"{SESSION}.json").read_text())
    assert doc["status"] == "failed"
    # `docker kill` sends SIGKILL: exit code 128 + 9, seen while lm-eval runs.
    assert doc["error"]["message"] == "evaluation: server container exited with code 137 during the evaluation"
    assert doc["error"]["log_tail"]


def test_missing_image_with_pull_never_is_a_clear_error_and_pulls_nothing(client, tmp_path):
    before = sorted(image.id for image in client.images.list())
    missing = "gsm8k-bench/not-built:0"
    out = subprocess.run(run_args(tmp_path, "--image", missing), cwd=ROOT, env=env(), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode != 0
    doc = json.loads((tmp_path / f"{SESSION}.json").read_text())
    assert doc["status"] == "failed"
    assert doc["error"]["message"].startswith(
        f"server start: image '{missing}' is not on the Docker engine at {os.environ['DOCKER_HOST']} and "
        "--pull never forbids pulling it")
    assert sorted(image.id for image in client.images.list()) == before


def test_unreachable_engine_names_the_socket(client, tmp_path):
    socket = f"unix://{tmp_path}/nothing-here.sock"
    out = subprocess.run(run_args(tmp_path), cwd=ROOT, env={**env(), "DOCKER_HOST": socket},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    doc = json.loads((tmp_path / f"{SESSION}.json").read_text())
    assert doc["error"]["message"].startswith(f"server start: the Docker engine at {socket} is not reachable")
