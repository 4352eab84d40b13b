#!/usr/bin/env bash
# Opt-in: the training-throughput benchmark against PyTorch. Installs the full torch 2.13.0
# wheel (with its CUDA dependencies, ~2.7 GB: PyPI has no CPU-only build) into its own venv,
# cached in $SPACETUNE_CACHE (default ~/.cache/spacetune), then runs `cargo bench --bench
# train` with it. Not part of CI.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
. scripts/env.sh
cache="${SPACETUNE_CACHE:-$HOME/.cache/spacetune}"
venv="$cache/torch-venv"
if [ ! -f "$venv/.spacetune-1" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check torch==2.13.0
    touch "$venv/.spacetune-1"
fi
SPACETUNE_TORCH_PYTHON="$venv/bin/python" cargo bench --bench train
