"""NVIDIA: a GPU device request for tp GPUs, the host IPC namespace and a large /dev/shm (NCCL)."""

from __future__ import annotations

from gsm8k_bench.containers.spec import DeviceOptions


def device_options(tp: int) -> DeviceOptions:
    return DeviceOptions(gpu_count=tp, ipc_mode="host", shm_size="32g")
