"""The container a session runs: what the Docker launcher starts and --dry-run prints."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypedDict

# What the printed command mounts at the warm target: the launcher mounts the image's own folder there.
WARM_SOURCE_SHOWN = "$GSM8K_BENCH_CACHE/warm/<image-id>"


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = False

    @property
    def volume(self) -> str:
        """docker's (and pyxis's) `source:target[:ro]`."""
        return f"{self.source}:{self.target}{':ro' if self.read_only else ''}"


@dataclass(frozen=True)
class DeviceOptions:
    gpu_ids: tuple[str, ...] = ()  # NVIDIA device request for exactly these GPUs
    devices: tuple[str, ...] = ()
    group_add: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    ipc_mode: str | None = None
    shm_size: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)  # visible-devices variables


class VolumeBind(TypedDict):
    bind: str
    mode: str  # "ro" or "rw"


class GpuRequest(TypedDict):
    device_ids: list[str]
    capabilities: list[list[str]]


class _CreateArgsAlways(TypedDict):
    image: str
    entrypoint: list[str]
    command: list[str]
    name: str
    network_mode: str
    labels: dict[str, str]
    init: bool
    detach: bool


class CreateArgs(_CreateArgsAlways, total=False):
    """The keywords of the Docker SDK's `containers.create` this project sets."""

    environment: dict[str, str]
    volumes: dict[str, VolumeBind]
    device_requests: list[GpuRequest]
    devices: list[str]
    group_add: list[str]
    security_opt: list[str]
    ipc_mode: str
    shm_size: str


class ContainerRecord(TypedDict):
    """describe(): what --dry-run prints and the session JSON keeps under config.container."""

    image: str
    name: str
    command: list[str]
    devices: list[str]
    gpu_ids: list[str]
    group_add: list[str]
    security_opt: list[str]
    ipc: str | None
    shm_size: str | None
    network: str
    mounts: list[str]
    env: dict[str, str]
    env_by_name: list[str]
    labels: dict[str, str]
    warm_cache: str | None
    docker_run: str


@dataclass(frozen=True)
class DockerRun:
    argv: list[str]  # `docker run ...`, for people to read and rerun by hand
    create: CreateArgs  # what the Docker launcher passes to the SDK


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

    def docker_run(self, *, environ: Mapping[str, str], warm_source: str | None) -> DockerRun:
        """The spec in Docker's terms, translated once into both forms: the `docker run` command and the
        SDK's `containers.create` keywords.  Secret values come from `environ` (the command names them
        only); warm_source is the host folder mounted at the warm target (None: no such mount)."""
        d = self.device
        argv = ["docker", "run", "--rm", "--name", self.name, f"--network={self.network_mode}"]
        create: CreateArgs = {"image": self.image, "entrypoint": [self.command[0]], "command": list(self.command[1:]),
                              "name": self.name, "network_mode": self.network_mode, "labels": dict(self.labels),
                              "init": True,  # forwards SIGTERM to the server, which as PID 1 would ignore it
                              "detach": True}
        argv += [f"--label={k}={v}" for k, v in self.labels.items()]
        if d.gpu_ids:
            argv += ["--gpus", f'"device={",".join(d.gpu_ids)}"']
            create["device_requests"] = [{"device_ids": list(d.gpu_ids), "capabilities": [["gpu"]]}]
        if d.devices:
            argv += [f"--device={dev}" for dev in d.devices]
            create["devices"] = [f"{dev}:{dev}:rwm" for dev in d.devices]
        if d.group_add:
            argv += [f"--group-add={group}" for group in d.group_add]
            create["group_add"] = list(d.group_add)
        if d.security_opt:
            argv += [f"--security-opt={opt}" for opt in d.security_opt]
            create["security_opt"] = list(d.security_opt)
        if d.ipc_mode:
            argv.append(f"--ipc={d.ipc_mode}")
            create["ipc_mode"] = d.ipc_mode
        if d.shm_size:
            argv.append(f"--shm-size={d.shm_size}")
            create["shm_size"] = d.shm_size
        mounts = self.mounts
        if self.warm_target and warm_source:
            mounts += (Mount(warm_source, self.warm_target),)
        argv += [f"--volume={m.volume}" for m in mounts]
        create["volumes"] = {m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in mounts}
        argv += [f"--env={k}={v}" for k, v in self.environment.items()]
        argv += [f"--env={name}" for name in self.secret_env]  # docker copies the value by name
        create["environment"] = {**self.environment, **{k: environ[k] for k in self.secret_env if k in environ}}
        argv += ["--entrypoint", self.command[0], self.image, *self.command[1:]]
        return DockerRun(argv, create)

    def docker_run_argv(self) -> list[str]:
        """The equivalent `docker run` command, for people to read and rerun by hand."""
        return self.docker_run(environ={}, warm_source=WARM_SOURCE_SHOWN).argv

    def describe(self) -> ContainerRecord:
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
            "mounts": [m.volume for m in self.mounts],
            "env": dict(self.environment),
            "env_by_name": list(self.secret_env),
            "labels": dict(self.labels),
            "warm_cache": self.warm_target,
            "docker_run": shlex.join(self.docker_run_argv()),
        }
