#!/usr/bin/env bash
# Build the CPU serving image with no registry: a Debian root made by debootstrap, imported into the
# engine, with vLLM's CPU build (the project's pinned, shared environment) installed into it.
#   usage: docker/build-cpu-image.sh [--tag TAG] [--force]
# The engine is DOCKER_HOST (default unix:///var/run/docker.sock). Needs root (debootstrap).
set -euo pipefail

usage() {
  echo "usage: $0 [--tag TAG] [--force]" >&2
  exit 2
}

repo=$(cd "$(dirname "$0")/.." && pwd)
tag=$(cd "$repo" && python3 -c 'from gsm8k_bench.serving import images; print(images.CPU_IMAGE)')
force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) [ $# -ge 2 ] || usage; tag=$2; shift 2 ;;
    --force) force=1; shift ;;
    *) usage ;;
  esac
done

if [ "$force" = 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "image $tag is already built (--force rebuilds it)"
  exit 0
fi
cd "$repo"
exec python3 -m gsm8k_bench.serving.images build-cpu --tag "$tag"
