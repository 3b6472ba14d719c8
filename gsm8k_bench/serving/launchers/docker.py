"""The server in a container, through the Docker SDK: the GPU runners' launcher.

The image is checked before anything starts, and pulled only as the pull policy says: `create` never
pulls on its own (the SDK's `run` would).  Containers of this project whose owning run is gone (crashed,
SIGKILLed) are removed first; this run's container is always stopped and removed.
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from gsm8k_bench.core.errors import ServerError
from gsm8k_bench.serving import compile_caches, procs, venvs
from gsm8k_bench.serving.containers import SESSION_LABEL
from gsm8k_bench.serving.containers.spec import ContainerSpec, CreateArgs
from gsm8k_bench.serving.launchers import LOG_TAIL_LINES
from gsm8k_bench.serving.launchers.sdk_protocols import Container, EngineClient, Image
from gsm8k_bench.serving.ownership import OWNER_LABEL, Owner, current_owner

STOP_TIMEOUT_S = 15
# How long a container's exit is checked against its engine going away (see DockerServer.exit_status).
ENGINE_LEAVING_S = 2.0
DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST", DEFAULT_SOCKET)


def docker_client() -> EngineClient:
    from docker.client import DockerClient
    from docker.errors import DockerException

    address = engine_address()
    try:
        # "auto" negotiates the API version with whatever engine answers (old or new).
        client: EngineClient = DockerClient(base_url=address, version="auto", timeout=60)
    except DockerException as exc:
        raise ServerError(f"the Docker engine at {address} is not reachable ({exc}); start dockerd, "
                          "or set DOCKER_HOST to its socket, or use --launcher process") from None
    return client


def ensure_image(client: EngineClient, image: str, pull: str) -> Image:
    """The image, pulled only as the policy allows; a missing image under `never` is a clear error."""
    from docker.errors import APIError, ImageNotFound

    if pull != "always":
        try:
            return client.images.get(image)
        except ImageNotFound:
            if pull == "never":
                raise ServerError(f"image {image!r} is not on the Docker engine at {engine_address()} and "
                                  "--pull never forbids pulling it; build or load it first "
                                  "(CPU image: docker/build-cpu-image.sh)") from None
    try:
        return client.images.pull(image)
    except APIError as exc:
        raise ServerError(f"pulling image {image!r} failed: {exc.explanation or exc}") from None


def sweep_orphans(client: EngineClient, session: str | None = None) -> list[str]:
    """Remove this project's containers whose owning run is provably gone (its process died, even by
    SIGKILL, or the host rebooted); a live run's container, here or on another host, is never touched.
    Containers from before owner labels are removed only for `session` (an earlier crashed run of it)."""
    from docker.errors import NotFound

    here = current_owner()
    removed = []
    for container in client.containers.list(all=True, filters={"label": SESSION_LABEL}):
        labels = container.labels or {}
        owner = Owner.parse(labels.get(OWNER_LABEL, ""))
        orphan = owner.is_gone(here) if owner else labels.get(SESSION_LABEL) == session
        if orphan:
            try:
                container.remove(force=True)
            except NotFound:
                continue  # another sweep got there first
            removed.append(container.name)
    return removed


def _engine_gone(exc: Exception) -> ServerError:
    return ServerError(f"Docker engine unreachable at {engine_address()} ({type(exc).__name__}); the "
                       "container is gone with it or will be removed by the next sweep")


def create_kwargs(spec: ContainerSpec, name: str, environ: Mapping[str, str],
                  warm_dir: Path | None = None) -> CreateArgs:
    """The SDK's arguments for this spec; secret values are read from `environ` only here.  warm_dir is
    this image's own cache folder, mounted at the spec's warm target."""
    from docker.types import DeviceRequest

    kwargs = spec.docker_run(environ=environ, warm_source=str(warm_dir) if warm_dir else None).create
    kwargs["name"] = name
    if "device_requests" in kwargs:  # the SDK's own objects, in the form the engine receives
        kwargs["device_requests"] = [DeviceRequest(**request) for request in kwargs["device_requests"]]
    return kwargs


class DockerRecord(TypedDict):
    launcher: str
    container: str
    image_id: str
    image_digests: list[str]
    image_tags: list[str]
    log: str
    warm_cache: str


@dataclass
class DockerServer:
    base_url: str
    container: Container
    image: Image
    log_path: Path
    warm_dir: Path
    stop_begun: bool = False

    def exit_status(self) -> str | None:
        import requests
        from docker.errors import DockerException, NotFound

        try:
            self.container.reload()
        except NotFound:
            return "container was removed"
        except (requests.RequestException, DockerException) as exc:
            raise _engine_gone(exc) from None
        state = self.container.attrs.get("State", {})
        if state.get("Status") in ("exited", "dead"):
            self._raise_if_engine_leaving()
            return f"container exited with code {state.get('ExitCode')}"
        return None

    def _raise_if_engine_leaving(self) -> None:
        """A stopping engine stops its containers first: a container that exits while the engine goes away
        is the engine's loss, and the session says so (the engine is gone within ENGINE_LEAVING_S)."""
        import requests
        from docker.errors import DockerException

        deadline = time.monotonic() + ENGINE_LEAVING_S
        while time.monotonic() < deadline:
            try:
                self.container.client.ping()
            except (requests.RequestException, DockerException) as exc:
                raise _engine_gone(exc) from None
            time.sleep(0.25)

    def hang_status(self) -> str | None:
        """A paused container, or a stopped process in it (ps on the engine's host, via `docker top`)."""
        import requests
        from docker.errors import APIError

        if self.container.attrs.get("State", {}).get("Paused"):
            return "container is paused"
        try:
            top = self.container.top(ps_args="-o pid,stat")
        except (APIError, requests.RequestException):
            return None  # not running (yet), or the engine is gone: exit_status says which
        titles = top.get("Titles") or []
        if "STAT" not in titles:
            return None
        stat = titles.index("STAT")
        stopped = [row[0] for row in top.get("Processes") or [] if row[stat].startswith("T")]
        return f"process(es) {', '.join(stopped)} in the container stopped (SIGSTOP?)" if stopped else None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return procs.tail(self.log_path, lines)

    def record(self) -> DockerRecord:
        return {"launcher": "docker", "container": self.container.name, "image_id": self.image.id,
                "image_digests": list(self.image.attrs.get("RepoDigests") or []),
                "image_tags": list(self.image.tags), "log": str(self.log_path), "warm_cache": str(self.warm_dir)}

    def begin_stop(self) -> None:
        import requests
        from docker.errors import DockerException

        if self.stop_begun:
            return
        self.stop_begun = True
        try:
            _signal_stop(self.container)
        except (requests.RequestException, DockerException):
            pass  # not running any more, or the engine is gone: leaving docker_server's block sees to both


def _follow_logs(container: Container, log_path: Path) -> threading.Thread:
    def copy() -> None:
        from docker.errors import APIError

        try:
            with log_path.open("ab") as log:
                for chunk in container.logs(stream=True, follow=True):
                    log.write(chunk)
                    log.flush()
        except (APIError, OSError):
            pass  # the container went away; what was copied stays in the log

    thread = threading.Thread(target=copy, name=f"logs-{container.name}", daemon=True)
    thread.start()
    return thread


@contextmanager
def docker_server(spec: ContainerSpec, *, base_url: str, pull: str, log_path: Path) -> Iterator[DockerServer]:
    client = docker_client()
    image = ensure_image(client, spec.image, pull)
    sweep_orphans(client, spec.labels[SESSION_LABEL])
    name = f"{spec.name}-{secrets.token_hex(3)}"
    warm_dir = compile_caches.host_dir(venvs.cache_dir(), image.id)
    warm_dir.mkdir(parents=True, exist_ok=True)
    kwargs = create_kwargs(spec, name, dict(os.environ), warm_dir)
    kwargs["labels"][OWNER_LABEL] = current_owner().label()
    container = client.containers.create(**kwargs)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    server = DockerServer(base_url, container, image, log_path, warm_dir)
    try:
        container.start()
        _follow_logs(container, log_path)
        yield server
    finally:
        _stop_and_remove(container, signalled=server.stop_begun)
        client.close()


def main(argv: list[str]) -> int:
    """`python -m gsm8k_bench.serving.launchers.docker sweep`: the workflow's always-run cleanup step."""
    if argv != ["sweep"]:
        print("usage: python -m gsm8k_bench.serving.launchers.docker sweep", file=sys.stderr)
        return 2
    client = docker_client()
    for name in sweep_orphans(client):
        print(f"removed orphaned container {name}")
    client.close()
    return 0


def _signal_stop(container: Container) -> None:
    container.kill(signal="SIGTERM")
    container.kill(signal="SIGCONT")  # docker-init passes both on: a stopped server acts on SIGTERM


def _stop_and_remove(container: Container, signalled: bool) -> None:
    """SIGTERM (unless `begin_stop` sent it) with a grace period (cut short by a second interrupt), then
    removal, which kills whatever still runs.  An engine that is gone leaves nothing to do here (the next
    sweep removes the rest)."""
    import requests
    from docker.errors import APIError, NotFound

    with procs.cleanup_shield():
        try:
            if not signalled:
                _signal_stop(container)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while time.monotonic() < deadline and not procs.hurried():
                container.reload()
                if container.attrs.get("State", {}).get("Status") in ("exited", "dead"):
                    break
                time.sleep(0.2)
        except NotFound:
            return
        except APIError:
            pass  # not running (any more): remove(force=True) below
        except requests.RequestException:
            return  # the engine is gone
        try:
            container.remove(force=True)
        except (NotFound, requests.RequestException):
            pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
