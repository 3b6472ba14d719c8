"""The server in a container through Slurm's pyxis plugin: `srun --container-image=<squashfs>` inside the
session's allocation, as a child process (enroot runs it; there is no engine to ask).

The squashfs comes from `slurm.import_script` (imported once per image, under a lock).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from gsm8k_bench.serving import compile_caches, venvs
from gsm8k_bench.serving.containers.spec import ContainerSpec
from gsm8k_bench.serving.launchers.process import ProcessServer, process_server


def srun_argv(spec: ContainerSpec, warm_dir: Path) -> list[str]:
    """Pure: the step that serves.  The image's own entrypoint is skipped (the command names the server),
    $HOME is not mounted, and root inside maps to the caller.  Variables reach the container through
    srun's environment (--export=ALL), so secret values never appear on a command line."""
    mounts = [m.volume for m in spec.mounts]
    if spec.warm_target:
        mounts.append(f"{warm_dir}:{spec.warm_target}")
    return ["srun", "--ntasks=1", "--overlap", "--export=ALL", f"--container-image={spec.image}",
            f"--container-mounts={','.join(mounts)}", "--no-container-mount-home", "--container-remap-root",
            "--no-container-entrypoint", *spec.command]


@contextmanager
def pyxis_server(spec: ContainerSpec, *, base_url: str, environ: Mapping[str, str],
                 log_path: Path) -> Iterator[ProcessServer]:
    warm_dir = compile_caches.host_dir(venvs.cache_dir(), Path(spec.image).name)
    warm_dir.mkdir(parents=True, exist_ok=True)
    with process_server(srun_argv(spec, warm_dir), base_url=base_url,
                        env={**environ, **spec.environment}, log_path=log_path) as server:
        yield server
