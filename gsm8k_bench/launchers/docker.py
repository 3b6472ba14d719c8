"""The server in a container, through the Docker SDK: the GPU runners' launcher.

The image is checked before anything starts, and pulled only as the pull policy says: `create` never
pulls on its own (the SDK's `run` would).  Leftover containers labelled for the same session (an
earlier run that crashed) are removed first; this run's container is always stopped and removed.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gsm8k_bench import envs, procs, warm
from gsm8k_bench.containers import SESSION_LABEL
from gsm8k_bench.containers.spec import ContainerSpec
from gsm8k_bench.errors import ServerError
from gsm8k_bench.launchers import LOG_TAIL_LINES

STOP_TIMEOUT_S = 15
DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST", DEFAULT_SOCKET)


def docker_client():
    import docker

    address = engine_address()
    try:
        # "auto" negotiates the API version with whatever engine answers (old or new).
        return docker.DockerClient(base_url=address, version="auto", timeout=60)
    except docker.errors.DockerException as exc:
        raise ServerError(f"the Docker engine at {address} is not reachable ({exc}); start dockerd, "
                          "or set DOCKER_HOST to its socket, or use --launcher process") from None


def ensure_image(client, image: str, pull: str):
    """The image, pulled only as the policy allows; a missing image under `never` is a clear error."""
    import docker

    if pull != "always":
        try:
            return client.images.get(image)
        except docker.errors.ImageNotFound:
            if pull == "never":
                raise ServerError(f"image {image!r} is not on the Docker engine at {engine_address()} and "
                                  "--pull never forbids pulling it; build or load it first "
                                  "(CPU image: docker/build-cpu-image.sh)") from None
    try:
        return client.images.pull(image)
    except docker.errors.APIError as exc:
        raise ServerError(f"pulling image {image!r} failed: {exc.explanation or exc}") from None


def remove_leftovers(client, session: str) -> list[str]:
    """Containers an earlier, crashed run of this session left behind."""
    removed = []
    for container in client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={session}"}):
        container.remove(force=True)
        removed.append(container.name)
    return removed


def create_kwargs(spec: ContainerSpec, name: str, environ: dict[str, str], warm_dir: Path | None = None) -> dict:
    """The SDK's arguments for this spec; secret values are read from `environ` only here.  warm_dir is
    this image's own cache folder, mounted at the spec's warm target."""
    from docker.types import DeviceRequest

    d = spec.device
    kwargs = {
        "image": spec.image,
        "entrypoint": [spec.command[0]],
        "command": list(spec.command[1:]),
        "name": name,
        "labels": dict(spec.labels),
        "environment": {**spec.environment, **{k: environ[k] for k in spec.secret_env if k in environ}},
        "volumes": {m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in spec.mounts},
        "network_mode": spec.network_mode,
        "init": True,  # forwards SIGTERM to the server, which as PID 1 would ignore it
        "detach": True,
    }
    if spec.warm_target and warm_dir:
        kwargs["volumes"][str(warm_dir)] = {"bind": spec.warm_target, "mode": "rw"}
    if d.gpu_ids:
        kwargs["device_requests"] = [DeviceRequest(device_ids=list(d.gpu_ids), capabilities=[["gpu"]])]
    if d.devices:
        kwargs["devices"] = [f"{dev}:{dev}:rwm" for dev in d.devices]
    if d.group_add:
        kwargs["group_add"] = list(d.group_add)
    if d.security_opt:
        kwargs["security_opt"] = list(d.security_opt)
    if d.ipc_mode:
        kwargs["ipc_mode"] = d.ipc_mode
    if d.shm_size:
        kwargs["shm_size"] = d.shm_size
    return kwargs


@dataclass
class DockerServer:
    base_url: str
    container: object
    image: object
    log_path: Path
    warm_dir: Path

    def exit_status(self) -> str | None:
        import docker

        try:
            self.container.reload()
        except docker.errors.NotFound:
            return "container was removed"
        state = self.container.attrs.get("State", {})
        if state.get("Status") in ("exited", "dead"):
            return f"container exited with code {state.get('ExitCode')}"
        return None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return procs.tail(self.log_path, lines)

    def record(self) -> dict:
        return {"launcher": "docker", "container": self.container.name, "image_id": self.image.id,
                "image_digests": list(self.image.attrs.get("RepoDigests") or []),
                "image_tags": list(self.image.tags), "log": str(self.log_path), "warm_cache": str(self.warm_dir)}


def _follow_logs(container, log_path: Path) -> threading.Thread:
    def copy() -> None:
        import docker

        try:
            with log_path.open("ab") as log:
                for chunk in container.logs(stream=True, follow=True):
                    log.write(chunk)
                    log.flush()
        except (docker.errors.APIError, OSError):
            pass  # the container went away; what was copied stays in the log

    thread = threading.Thread(target=copy, name=f"logs-{container.name}", daemon=True)
    thread.start()
    return thread


@contextmanager
def docker_server(spec: ContainerSpec, *, base_url: str, pull: str, log_path: Path) -> Iterator[DockerServer]:
    client = docker_client()
    image = ensure_image(client, spec.image, pull)
    remove_leftovers(client, spec.labels[SESSION_LABEL])
    name = f"{spec.name}-{secrets.token_hex(3)}"
    warm_dir = warm.host_dir(envs.cache_dir(), image.id)
    warm_dir.mkdir(parents=True, exist_ok=True)
    container = client.containers.create(**create_kwargs(spec, name, dict(os.environ), warm_dir))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        container.start()
        _follow_logs(container, log_path)
        yield DockerServer(base_url, container, image, log_path, warm_dir)
    finally:
        _stop_and_remove(container)
        client.close()


def _stop_and_remove(container) -> None:
    """SIGTERM with a grace period, then removal (which kills whatever still runs)."""
    import docker

    try:
        container.stop(timeout=STOP_TIMEOUT_S)
    except docker.errors.NotFound:
        return
    except docker.errors.APIError:
        pass  # remove(force=True) below kills it
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
