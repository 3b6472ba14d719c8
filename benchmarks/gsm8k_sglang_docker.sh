#!/usr/bin/env bash
# One ad-hoc GSM8k run of sglang in a container: model / runner / image / precision / tp / few-shot / limit.
set -euo pipefail
FRAMEWORK=sglang
# shellcheck source=benchmarks/adhoc.sh
source "$(dirname "$0")/adhoc.sh"
run_adhoc "$@"
