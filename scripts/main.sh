#!/usr/bin/env bash
# The main job: the whole pipeline on the default example (BBSSP's Mobile, Res and VGG
# spaces on a Fashion-MNIST skeleton) with the embedded default backend (`sim`, the
# simulated DPU-class accelerator) at the `small` budget — check, expand, measure, correct,
# profile, select, reduce, search (ProxylessNAS mode: one path per step), emit and the
# baselines — then the report: spacetune-out/report.html and summary.json.
# Killed and rerun, it continues: measurements, trainings and search epochs are stored.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
. scripts/env.sh
example="${1:-examples/bbssp_fmnist.space}"
cargo build --release --quiet
./target/release/spacetune run "$example" --backend sim --dataset fashion-mnist \
    --budget small --mode proxyless --out spacetune-out
