#!/usr/bin/env bash
# mi355x: check the driver and GPU count, prepare the HF cache and registry login, run the session(s).
set -euo pipefail
SKU=mi355x
# shellcheck source=runners/lib.sh
source "$(dirname "$0")/lib.sh"
launch "$@"
