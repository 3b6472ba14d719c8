"""CPU: no devices; a modest /dev/shm is enough for one process."""

from __future__ import annotations

from gsm8k_bench.serving.containers.spec import DeviceOptions


def device_options(gpus: None) -> DeviceOptions:
    return DeviceOptions(shm_size="2g")
