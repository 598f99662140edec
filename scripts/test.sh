#!/usr/bin/env bash
# The whole test suite, after setting up .venv if needed. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
HF_HUB_OFFLINE=1 python -m pytest -q "$@"
