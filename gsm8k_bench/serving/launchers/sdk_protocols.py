"""The Docker SDK as this project uses it, typed: the SDK ships no types, so these Protocols are the part
of its objects the launcher (and the image build) use, and the TypedDicts the part of the engine's JSON
they read.  launchers.docker.docker_client() is where an SDK object becomes one of these.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Protocol, TypedDict

from gsm8k_bench.serving.containers.spec import CreateArgs

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's own from Python 3.11


class ContainerState(TypedDict, total=False):
    Status: str
    ExitCode: int
    Paused: bool


class ContainerAttrs(TypedDict, total=False):
    State: ContainerState


class ImageAttrs(TypedDict, total=False):
    RepoDigests: list[str]


class ProcessTable(TypedDict, total=False):
    """`docker top`: ps's column titles and one row of columns per process."""

    Titles: list[str]
    Processes: list[list[str]]


class Image(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def tags(self) -> list[str]: ...

    @property
    def attrs(self) -> ImageAttrs: ...


class Container(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def labels(self) -> dict[str, str]: ...

    @property
    def attrs(self) -> ContainerAttrs: ...

    @property
    def client(self) -> EngineClient: ...

    def reload(self) -> None: ...

    def start(self) -> None: ...

    def kill(self, signal: str) -> None: ...

    def remove(self, *, force: bool) -> None: ...

    def top(self, *, ps_args: str) -> ProcessTable: ...

    def logs(self, *, stream: bool, follow: bool) -> Iterator[bytes]: ...


class Containers(Protocol):
    def list(self, *, all: bool, filters: Mapping[str, str]) -> list[Container]: ...

    def create(self, **kwargs: Unpack[CreateArgs]) -> Container: ...


class Images(Protocol):
    def get(self, name: str) -> Image: ...

    def pull(self, repository: str) -> Image: ...


class LowLevelApi(Protocol):
    def import_image_from_file(self, filename: str, *, repository: str, tag: str, changes: list[str]) -> object: ...


class EngineClient(Protocol):
    @property
    def containers(self) -> Containers: ...

    @property
    def images(self) -> Images: ...

    @property
    def api(self) -> LowLevelApi: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...
