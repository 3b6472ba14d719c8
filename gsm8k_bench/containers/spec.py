"""The container a session runs: what the Docker launcher starts and --dry-run prints."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class DeviceOptions:
    gpu_ids: tuple[str, ...] = ()  # NVIDIA device request for exactly these GPUs
    devices: tuple[str, ...] = ()
    group_add: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    ipc_mode: str | None = None
    shm_size: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)  # visible-devices variables


@dataclass(frozen=True)
class ContainerSpec:
    image: str
    command: tuple[str, ...]
    name: str
    labels: Mapping[str, str]
    environment: Mapping[str, str]
    secret_env: tuple[str, ...]
    mounts: tuple[Mount, ...]
    device: DeviceOptions = field(default_factory=DeviceOptions)
    network_mode: str = "host"
    # The framework caches' folder in the container; the launcher mounts the image's own folder there.
    warm_target: str | None = None

    def docker_run_argv(self) -> list[str]:
        """The equivalent `docker run` command, for people to read and rerun by hand."""
        d = self.device
        argv = ["docker", "run", "--rm", "--name", self.name, f"--network={self.network_mode}"]
        argv += [f"--label={k}={v}" for k, v in self.labels.items()]
        if d.gpu_ids:
            argv += ["--gpus", f'"device={",".join(d.gpu_ids)}"']
        argv += [f"--device={dev}" for dev in d.devices]
        argv += [f"--group-add={group}" for group in d.group_add]
        argv += [f"--security-opt={opt}" for opt in d.security_opt]
        if d.ipc_mode:
            argv.append(f"--ipc={d.ipc_mode}")
        if d.shm_size:
            argv.append(f"--shm-size={d.shm_size}")
        argv += [f"--volume={m.source}:{m.target}{':ro' if m.read_only else ''}" for m in self.mounts]
        if self.warm_target:
            argv.append(f"--volume=$GSM8K_BENCH_CACHE/warm/<image-id>:{self.warm_target}")
        argv += [f"--env={k}={v}" for k, v in self.environment.items()]
        argv += [f"--env={name}" for name in self.secret_env]  # docker copies the value by name
        argv += ["--entrypoint", self.command[0], self.image, *self.command[1:]]
        return argv

    def describe(self) -> dict:
        return {
            "image": self.image,
            "name": self.name,
            "command": list(self.command),
            "devices": list(self.device.devices),
            "gpu_ids": list(self.device.gpu_ids),
            "group_add": list(self.device.group_add),
            "security_opt": list(self.device.security_opt),
            "ipc": self.device.ipc_mode,
            "shm_size": self.device.shm_size,
            "network": self.network_mode,
            "mounts": [f"{m.source}:{m.target}{':ro' if m.read_only else ''}" for m in self.mounts],
            "env": dict(self.environment),
            "env_by_name": list(self.secret_env),
            "labels": dict(self.labels),
            "warm_cache": self.warm_target,
            "docker_run": shlex.join(self.docker_run_argv()),
        }
