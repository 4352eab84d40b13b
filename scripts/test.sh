#!/usr/bin/env bash
# The test suite, as CI runs it: formatting, lints, the build without TVM, then every test
# of the workspace.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
# Headless Chromium renders the run's report in tests/run.rs.
if ! command -v chromium >/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "test: installing chromium" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
# PostgreSQL and Slurm for tests/workers.rs: each test starts a server or a one-node cluster
# of its own (Debian's packages may start theirs, which the tests leave alone).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v slurmctld >/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "test: installing postgresql, slurm-wlm and munge" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql slurm-wlm munge >/dev/null
fi
. scripts/env.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# Without TVM it must still build (cheap after clippy: the dependencies' metadata is shared).
cargo check --workspace --all-targets --no-default-features --quiet
cargo test --workspace
