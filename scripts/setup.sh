#!/usr/bin/env bash
# Create .venv and install noiseunet into it, once. Sourced by main.sh and test.sh.
# torch comes first and deliberately: a machine without an NVIDIA GPU gets the CPU build (an
# unpinned `pip install torch` would pull a multi-GB CUDA build it cannot use).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

if [ ! -f .venv/.noiseunet-installed ] || [ pyproject.toml -nt .venv/.noiseunet-installed ]; then
    python -m pip install --quiet --upgrade pip
    if ! python -c "import torch" 2>/dev/null; then
        if nvidia-smi -L >/dev/null 2>&1; then
            python -m pip install --quiet "torch>=2.4"                       # CUDA build
        elif python -c "import socket; socket.gethostbyname('download.pytorch.org')" 2>/dev/null; then
            python -m pip install --quiet torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
        else
            python -m pip install --quiet torch==2.13.0                      # CPU build from the local wheel mirror
        fi
    fi
    python -m pip install --quiet -e ".[dev]"
    touch .venv/.noiseunet-installed
fi
