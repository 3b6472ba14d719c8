"""AMD ROCm: the KFD and DRI devices, video and render groups, no seccomp filter, host IPC, large shm."""

from __future__ import annotations

from gsm8k_bench.containers.spec import DeviceOptions


def device_options(tp: int) -> DeviceOptions:
    # ROCm containers see every GPU through /dev/kfd; tp ranks take the first tp of them.
    return DeviceOptions(
        devices=("/dev/kfd", "/dev/dri"),
        group_add=("video", "render"),
        security_opt=("seccomp=unconfined",),
        ipc_mode="host",
        shm_size="32g",
    )
