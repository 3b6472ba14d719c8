"""NVIDIA: a device request for exactly the session's GPUs, the host IPC namespace and a large /dev/shm (NCCL)."""

from __future__ import annotations

from gsm8k_bench.serving.containers.spec import DeviceOptions
from gsm8k_bench.serving.gpus import GpuAssignment


def device_options(gpus: GpuAssignment) -> DeviceOptions:
    return DeviceOptions(gpu_ids=tuple(map(str, gpus.ids)), ipc_mode="host", shm_size="32g")
