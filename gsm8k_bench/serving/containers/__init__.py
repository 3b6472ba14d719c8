"""Pure: a combination -> the container that serves it (image, devices, mounts, env names, shm, ipc).

One module per vendor supplies the device options; everything else is common.  Secret values never
enter a spec: it lists their names, and the Docker launcher reads the values from the environment
at the moment it starts the container.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from gsm8k_bench.serving import compile_caches
from gsm8k_bench.serving.containers import amd, cpu, nvidia
from gsm8k_bench.serving.containers.spec import ContainerSpec, Mount
from gsm8k_bench.serving.gpus import GpuAssignment

VENDOR_OPTIONS = {"nvidia": nvidia, "amd": amd, "cpu": cpu}
SESSION_LABEL = "gsm8k-bench.session"
# Passed by name only; the values stay in the environment of whoever runs the session.
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
CONTAINER_HF_HOME = "/root/.cache/huggingface"


def container_spec(*, vendor: str, gpus: GpuAssignment | None, image: str, command: list[str], name: str, session: str,
                   hf_home: Path, environment: Mapping[str, str], extra_mounts: tuple[Mount, ...] = ()
                   ) -> ContainerSpec:
    device = VENDOR_OPTIONS[vendor].device_options(gpus)
    return ContainerSpec(
        image=image,
        command=tuple(command),
        name=name,
        labels={SESSION_LABEL: session},
        environment={"HF_HOME": CONTAINER_HF_HOME, **compile_caches.environment(compile_caches.CONTAINER_ROOT),
                     **environment,
                     **device.environment},
        secret_env=SECRET_ENV,
        mounts=(Mount(str(hf_home), CONTAINER_HF_HOME), *extra_mounts),
        device=device,
        warm_target=compile_caches.CONTAINER_ROOT,
    )
