# shellcheck shell=bash
# Shared by launch_gsm8k_<sku>.sh: host checks for one GPU SKU, then the session(s) through nox.
# Values reach nox as separate arguments, never through eval or an unquoted expansion.

usage() {
  cat >&2 <<USAGE
usage: $(basename "$0") SESSION [SESSION ...] [-- SESSION_ARGS ...]
  SESSION       a matrix session for this runner (nox -l -t ${SKU}), or 'gsm8k' for an
                ad-hoc combination whose --model/--runner/... follow after --
  SESSION_ARGS  passed to every session, e.g. --limit 200 --dataset-dir /data/gsm8k
environment:
  HF_HOME            Hugging Face cache mounted into the server (default ~/.cache/huggingface)
  HF_TOKEN           reaches the server by name only; never printed
  REGISTRY, REGISTRY_USER, REGISTRY_PASSWORD   optional docker login before pulling images
USAGE
  exit 2
}

gpu_count() {
  case "$1" in
    nvidia)
      command -v nvidia-smi >/dev/null || { echo "error: nvidia-smi not found: is the NVIDIA driver installed?" >&2; exit 1; }
      nvidia-smi --list-gpus | grep -c '^GPU ' ;;
    amd)
      command -v rocm-smi >/dev/null || { echo "error: rocm-smi not found: is ROCm installed?" >&2; exit 1; }
      rocm-smi --showid --csv | grep -c '^card' ;;
    *) echo "error: unknown vendor $1" >&2; exit 1 ;;
  esac
}

launch() {
  local repo sessions=() args=() vendor gpus found
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    case "$1" in
      -h|--help) usage ;;
      gsm8k) sessions+=("$1") ;;
      gsm8k-*-"${SKU}"-*) sessions+=("$1") ;;
      *) echo "error: '$1' is not a gsm8k session for ${SKU} (list them: nox -l -t ${SKU})" >&2; usage ;;
    esac
    shift
  done
  [ "${#sessions[@]}" -gt 0 ] || usage
  if [ $# -gt 0 ]; then shift; args=("$@"); fi

  cd "$repo" || exit 1
  read -r vendor gpus < <(python3 -c 'import sys; from gsm8k_bench.matrix.loader import load_matrix
r = load_matrix("matrix.yaml").runners[sys.argv[1]]; print(r.vendor, r.gpus)' "$SKU")
  found=$(gpu_count "$vendor")
  if [ "$found" -lt "$gpus" ]; then
    echo "error: ${SKU} runner should have ${gpus} GPUs, the driver sees ${found}" >&2
    exit 1
  fi
  echo "${SKU}: ${found} ${vendor} GPUs"

  export HF_HOME="${HF_HOME:-$HOME/.cache/huggingface}"
  mkdir -p "$HF_HOME"
  if [ -n "${REGISTRY_USER:-}" ]; then
    printf '%s' "${REGISTRY_PASSWORD:?REGISTRY_PASSWORD must be set with REGISTRY_USER}" |
      docker login --username "$REGISTRY_USER" --password-stdin ${REGISTRY:+"$REGISTRY"}
  fi
  exec nox -s "${sessions[@]}" -- "${args[@]}"
}
