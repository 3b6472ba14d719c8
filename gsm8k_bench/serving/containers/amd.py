"""AMD ROCm: /dev/kfd plus the session's own render nodes, video and render groups, no seccomp filter,
host IPC, large shm."""

from __future__ import annotations

from gsm8k_bench.serving.containers.spec import DeviceOptions
from gsm8k_bench.serving.gpus import AMD_VISIBLE_VARS, GpuAssignment


def device_options(gpus: GpuAssignment) -> DeviceOptions:
    if gpus.render_nodes:
        # The container sees only these render nodes, and ROCm numbers what it sees from 0.
        devices, visible = ("/dev/kfd", *gpus.render_nodes), ",".join(map(str, range(len(gpus.ids))))
    else:
        # No KFD topology here (planning away from the GPU host): every GPU, narrowed by the variables.
        devices, visible = ("/dev/kfd", "/dev/dri"), gpus.text
    return DeviceOptions(
        devices=devices,
        group_add=("video", "render"),
        security_opt=("seccomp=unconfined",),
        ipc_mode="host",
        shm_size="32g",
        environment={name: visible for name in AMD_VISIBLE_VARS},
    )
