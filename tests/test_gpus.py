"""GPU assignment: given, inherited or default; count = tp; AMD render nodes from the KFD topology (pure).
Host-wide claims: held by a real process, refused to another naming the holder, gone with the holder."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest
from conftest import ROOT
from test_commands import plan_for

from gsm8k_bench.core.errors import ConfigError
from gsm8k_bench.serving import gpus
from gsm8k_bench.serving.gpus import KfdNode, amd_render_nodes, assign, parse_ids, read_kfd_topology
from gsm8k_bench.serving.launchers.docker import create_kwargs

# An MI300X-like host: two CPU NUMA nodes first, then GPUs whose render minors do not follow their order.
TOPOLOGY = (KfdNode(0, 0, 0), KfdNode(1, 0, 0), KfdNode(2, 5211, 136), KfdNode(3, 6022, 128),
            KfdNode(4, 4411, 144), KfdNode(5, 9023, 152))


@pytest.mark.parametrize(("text", "ids"), [("0,1", (0, 1)), ("0-3", (0, 1, 2, 3)), ("4-5,7", (4, 5, 7)),
                                           (" 2 , 3 ", (2, 3))])
def test_parse_ids(text, ids):
    assert parse_ids(text, "--gpus") == ids


@pytest.mark.parametrize(("text", "message"), [("a", "not a GPU list"), ("3-1", "runs backwards"),
                                               ("0,0", "names a GPU twice"), ("1,", "not a GPU list")])
def test_parse_ids_rejects(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_ids(text, "--gpus")


def test_the_option_wins_then_slurm_then_the_visible_devices_then_the_first_tp():
    env = {"SLURM_JOB_GPUS": "4,5", "CUDA_VISIBLE_DEVICES": "0,1", "ROCR_VISIBLE_DEVICES": "2,3"}
    assert assign("6,7", env, "nvidia", 2).ids == (6, 7)
    assert assign(None, env, "nvidia", 2).source == "SLURM_JOB_GPUS"
    assert assign(None, {"CUDA_VISIBLE_DEVICES": "0,1"}, "nvidia", 2).ids == (0, 1)
    assert assign(None, {"ROCR_VISIBLE_DEVICES": "2,3", "CUDA_VISIBLE_DEVICES": "0,1"}, "amd", 2).ids == (2, 3)
    default = assign(None, {}, "nvidia", 4)
    assert default.ids == (0, 1, 2, 3) and default.source == "default"
    assert assign(None, env, "cpu", 1) is None


def test_the_count_must_equal_tp():
    with pytest.raises(ConfigError, match=r"3 GPU\(s\) given .* tp=2; give exactly 2"):
        assign("0-2", {}, "nvidia", 2)
    with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES=0: 1 GPU"):
        assign(None, {"CUDA_VISIBLE_DEVICES": "0"}, "nvidia", 8)
    with pytest.raises(ConfigError, match="cpu sessions use no GPU"):
        assign("0", {}, "cpu", 1)


def test_amd_render_nodes_follow_the_kfd_gpu_order():
    assert amd_render_nodes(TOPOLOGY, (0, 1)) == ("/dev/dri/renderD136", "/dev/dri/renderD128")
    assert amd_render_nodes(TOPOLOGY, (3,)) == ("/dev/dri/renderD152",)
    with pytest.raises(ConfigError, match="lists 4 GPU"):
        amd_render_nodes(TOPOLOGY, (4,))


def test_kfd_topology_is_read_from_sysfs_files(tmp_path):
    for number, gpu_id, minor in ((0, 0, 0), (1, 5211, 136), (10, 6022, 128)):
        node = tmp_path / str(number)
        node.mkdir()
        (node / "gpu_id").write_text(f"{gpu_id}\n")
        (node / "properties").write_text(f"cpu_cores_count 0\ndrm_render_minor {minor}\nsimd_count 1216\n")
    nodes = read_kfd_topology(tmp_path)
    assert sorted(nodes, key=lambda n: n.number) == [KfdNode(0, 0, 0), KfdNode(1, 5211, 136), KfdNode(10, 6022, 128)]
    assert amd_render_nodes(nodes, (1,)) == ("/dev/dri/renderD128",)  # node 10 sorts after node 1
    assert read_kfd_topology(tmp_path / "absent") == []


def test_amd_container_gets_only_its_render_nodes_and_renumbered_variables(matrix):
    combo = matrix.get("gsm8k-llama-3.3-70b-mi355x-sglang-fp16-tp8")
    from gsm8k_bench.session.options import parse_session_args
    from gsm8k_bench.session.plan import host_facts, plan_session
    options = parse_session_args(combo.name, [])
    host = replace(host_facts(combo, options, {"ROCR_VISIBLE_DEVICES": "0-7"}),
                   gpu_facts=(*TOPOLOGY, *(KfdNode(6 + i, 100 + i, 160 + 8 * i) for i in range(4))))
    plan = plan_session(combo, options, matrix.defaults, host)
    spec = plan.container
    assert spec.device.devices[0] == "/dev/kfd" and "/dev/dri" not in spec.device.devices
    assert spec.device.devices[1:3] == ("/dev/dri/renderD136", "/dev/dri/renderD128")
    assert len(spec.device.devices) == 9
    assert spec.environment["ROCR_VISIBLE_DEVICES"] == spec.environment["HIP_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"
    assert plan.gpus.record()["source"] == "ROCR_VISIBLE_DEVICES"


def test_nvidia_device_request_names_the_ids(matrix):
    plan = plan_for(matrix, "gsm8k-llama-3.3-70b-h100-vllm-fp8-tp4", "--gpus", "4-7")
    kwargs = create_kwargs(plan.container, "c", {})
    request = kwargs["device_requests"][0]
    assert request["DeviceIDs"] == ["4", "5", "6", "7"] and not request.get("Count")
    assert plan.gpus.record() == {"ids": [4, 5, 6, 7], "source": "--gpus", "render_nodes": []}


def test_process_launcher_narrows_the_server_to_its_gpus(matrix):
    plan = plan_for(matrix, "gsm8k-llama-3.1-8b-h100-vllm-fp16-tp1", "--launcher", "process", "--gpus", "3")
    assert plan.server_env["CUDA_VISIBLE_DEVICES"] == "3"


def test_a_claimed_gpu_is_refused_naming_its_holder_until_the_holder_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from gsm8k_bench.serving import gpus
        gpus.claim([5, 6], "gsm8k-first", Path({str(tmp_path)!r}))
        print("claimed", flush=True)
        time.sleep(600)
        """)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "claimed\n"
        with pytest.raises(gpus.GpusBusy, match=rf"^GPU 6 is in use by session gsm8k-first \(pid {holder.pid} on "):
            gpus.claim([7, 6], "gsm8k-second", tmp_path)
        gpus.claim([7], "gsm8k-third", tmp_path).release()  # all or none: the refused claim let 7 go
        holder.send_signal(signal.SIGKILL)  # however the holder ends, the kernel drops its claims
        holder.wait()
        claim = gpus.claim([5, 6], "gsm8k-second", tmp_path)
        assert (tmp_path / "6.lock").read_text().startswith("session gsm8k-second (pid ")
        claim.release()
    finally:
        holder.kill()
        holder.wait()


def test_a_symlink_in_place_of_a_claim_file_is_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "3.lock").symlink_to(victim)
    with pytest.raises(gpus.GpusBusy, match=rf"^cannot claim GPU 3: {tmp_path}/3.lock: "):
        gpus.claim([3], "gsm8k-x", tmp_path)
    assert victim.read_text() == "keep me"
