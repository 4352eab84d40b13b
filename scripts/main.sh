#!/usr/bin/env bash
# The main job: the pipeline on the default example (BBSSP's Mobile, Res and VGG spaces on
# the CIFAR-10 skeleton). Today that is check + expand; later issues add measure, correct,
# profile, select and search.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
example="${1:-examples/bbssp_cifar.space}"
cargo build --release --quiet
./target/release/spacetune check "$example"
./target/release/spacetune expand "$example"
