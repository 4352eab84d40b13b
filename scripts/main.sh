#!/usr/bin/env bash
# The main job: the pipeline on the default example (BBSSP's Mobile, Res and VGG spaces on
# the CIFAR-10 skeleton): check, expand, and measure every SSBN on the embedded default
# backend (`sim`, the simulated DPU-class accelerator); then the latency tables of the Mobile
# space (fusion rules, naive, corrected, kernel model) scored on 200 random networks.
# Profiling (training) and selection are separate commands (see the README).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
. scripts/env.sh
example="${1:-examples/bbssp_cifar.space}"
cargo build --release --quiet
./target/release/spacetune check "$example"
./target/release/spacetune expand "$example"
./target/release/spacetune measure "$example" --backend sim
./target/release/spacetune measure examples/bbssp_cifar_mobile.space --backend sim
./target/release/spacetune latency-eval examples/bbssp_cifar_mobile.space --backend sim --samples 200
