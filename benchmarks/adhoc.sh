# shellcheck shell=bash
# Shared by gsm8k_<framework>_docker.sh: one ad-hoc combination in a container, through `nox -s gsm8k`
# (the same Python code path as every matrix session; values are checked there).

usage() {
  cat >&2 <<USAGE
usage: $(basename "$0") --model M --runner R --precision P [--image I] [--tp N] [--checkpoint C]
       [--num-fewshot K] [--limit N] [-- SESSION_ARGS ...]
  Runs ${FRAMEWORK} in Docker for one combination, listed in matrix.yaml or not; the result is
  results/gsm8k-<model>-<runner>-${FRAMEWORK}-<precision>-tp<N>.json.
  M: a matrix.yaml model or a checkpoint (hub id or path); R: a runner name or its CI label
  (h100 or h100-cr).
USAGE
  exit 2
}

run_adhoc() {
  local args=() extra=() have_model=0 have_runner=0 have_precision=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --model|--runner|--precision|--image|--tp|--checkpoint|--num-fewshot|--limit)
        [ $# -ge 2 ] && [ -n "$2" ] || { echo "error: $1 needs a value" >&2; usage; }
        case "$1" in
          --model) have_model=1 ;;
          --runner) have_runner=1 ;;
          --precision) have_precision=1 ;;
        esac
        args+=("$1" "$2"); shift 2 ;;
      --) shift; extra=("$@"); break ;;
      -h|--help) usage ;;
      *) echo "error: unknown option '$1'" >&2; usage ;;
    esac
  done
  [ "$have_model" = 1 ] && [ "$have_runner" = 1 ] && [ "$have_precision" = 1 ] || usage
  cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
  exec nox -s gsm8k -- --framework "$FRAMEWORK" --launcher docker "${args[@]}" "${extra[@]}"
}
