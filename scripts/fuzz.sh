#!/usr/bin/env bash
# Coverage-guided fuzzing of every target in fuzz/ (cargo-fuzz, libFuzzer, nightly), for
# SECONDS each (default 60) in JOBS processes (default 1; libFuzzer's fork mode, which
# keeps going after a crash, so one run finds every crash it can):
#     scripts/fuzz.sh [SECONDS] [JOBS] [TARGET...]
# Corpora start from examples/, tests/in, tests/fail and the checked-in crashers, and grow
# in fuzz/corpus/<target> (not checked in). A crash stops its target and is left in
# fuzz/artifacts/<target>; minimise it (cargo +nightly fuzz tmin TARGET FILE), fix it, and
# check the minimised input in under fuzz/regressions/<target>/, where the ordinary test
# suite replays it on stable (tests/fuzz_regressions.rs). Prints executions and coverage
# per target, and writes them to fuzz/stats.tsv; then runs a sample of the onnx target's
# corpus through onnx.checker (tests/onnx_checker.rs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-60}"
jobs="${2:-1}"
shift $(( $# > 2 ? 2 : $# ))
cd "$root"
. scripts/env.sh
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets="${*:-$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^spacetune-fuzz$')}"
cd fuzz
cargo +nightly fuzz build -s none >/dev/null
printf 'target\tseconds\texecs\tedges\tfeatures\tcrashes\n' > stats.tsv
status=0
for t in $targets; do
    corpus="corpus/$t"
    mkdir -p "$corpus" "artifacts/$t"
    for f in "$root"/examples/*.space "$root"/tests/in/*.space "$root"/tests/fail/*.space \
             "$root"/fuzz/regressions/"$t"/*; do
        [ -f "$f" ] && cp -n "$f" "$corpus/seed-$(basename "$f")" 2>/dev/null || true
    done
    log="artifacts/$t/log.txt"
    set +e
    cargo +nightly fuzz run -s none "$t" "$corpus" -- \
        -max_total_time="$seconds" -fork="$jobs" -ignore_crashes=1 -ignore_timeouts=1 \
        -ignore_ooms=1 -timeout=20 -rss_limit_mb=4096 -max_len=4096 \
        -artifact_prefix="artifacts/$t/" >"$log" 2>&1
    rc=$?
    set -e
    # Fork mode's status lines: `#EXECS: cov: EDGES ft: FEATURES corp: ...`.
    execs=$(grep -ho '^#[0-9]*: cov' "$log" | tr -dc '0-9\n' | sort -n | tail -1)
    edges=$(grep -ho 'cov: [0-9]*' "$log" | awk '{if ($2>m) m=$2} END {print m+0}')
    feats=$(grep -ho 'ft: [0-9]*' "$log" | awk '{if ($2>m) m=$2} END {print m+0}')
    crashes=$(find "artifacts/$t" -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' | wc -l)
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$seconds" "$execs" "$edges" "$feats" "$crashes" >> stats.tsv
    if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        echo "fuzz: $t: exit $rc, $crashes crash(es) in fuzz/artifacts/$t (log: fuzz/$log)" >&2
        status=1
    fi
done
column -t stats.tsv
# What the onnx target exported must also be valid ONNX: a sample of its corpus through
# ONNX's own checker (stable toolchain, the main build).
if [ -d corpus/onnx ]; then
    cd "$root"
    checked=0
    out=$(SPACETUNE_ONNX_SAMPLE="$root/fuzz/corpus/onnx" cargo test --quiet \
        --test onnx_checker -- --nocapture 2>&1) || checked=1
    echo "$out" | grep -E 'sampled|rejected|test result' || true
    [ "$checked" -eq 0 ] || status=1
fi
exit $status
