#!/usr/bin/env bash
# The main job, after setting up .venv if needed. Extra arguments go to `noiseunet main`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
HF_HUB_OFFLINE=1 noiseunet main "$@"
