#!/usr/bin/env bash
# mi325x: check the driver and GPU count, prepare the HF cache and registry login, run the session(s).
set -euo pipefail
SKU=mi325x
# shellcheck source=runners/lib.sh
source "$(dirname "$0")/lib.sh"
launch "$@"
