#!/usr/bin/env bash
# h200: check the driver and GPU count, prepare the HF cache and registry login, run the session(s).
set -euo pipefail
SKU=h200
# shellcheck source=runners/lib.sh
source "$(dirname "$0")/lib.sh"
launch "$@"
