#!/usr/bin/env bash
# A worked example of plugging a board into spacetune with the `exec` backend:
#
#   spacetune run examples/bbssp_fmnist.space --backend exec \
#       -o command="bash examples/exec/board.sh" -o timeout=120
#
# spacetune runs the command once per network (MODEL.onnx and NETWORK.json in
# SPACETUNE_ONNX and SPACETUNE_JSON) and reads
# one JSON line from the last line of stdout: {"latency_ms": 1.23}. Anything else on stdout
# before it, and everything on stderr, is kept as the network's log; a non-zero exit or a
# timeout fails that network only.
#
# On a real board the three steps are the vendor's: compile the ONNX model with its
# toolchain, copy the artefact over, run its benchmark and print the figure. For example,
# a Vitis AI DPU on a ZCU102 (adapt names to your stack):
#
#   vai_c_xir -x quantized.xmodel -a arch.json -o build -n net        # compile
#   scp build/net.xmodel board:/tmp/                                  # copy
#   ssh board 'xdputil benchmark /tmp/net.xmodel 1 -t 10' | parse     # time
#
# BOARD=local (the default here, so the example runs anywhere) stands the board in with
# ONNX Runtime on this CPU from spacetune's Python venv: one thread, 20 warm-up runs, the
# 10th percentile of 200 timed runs.
set -euo pipefail
# The paths come as arguments when called as `board.sh "$1" "$2"`, else from the
# environment spacetune sets for the command.
model="${1:-$SPACETUNE_ONNX}"
network="${2:-$SPACETUNE_JSON}"
test -s "$model" && test -s "$network"
case "${BOARD:-local}" in
    local)
        python="${SPACETUNE_PYTHON:-$(dirname "${BASH_SOURCE[0]}")/../../.deps/venv/bin/python}"
        "$python" - "$model" <<'PY'
import json, sys, time
import numpy as np
import onnxruntime as ort

opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
sess = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])
inp = sess.get_inputs()[0]
x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in inp.shape]).astype(np.float32)
for _ in range(20):
    sess.run(None, {inp.name: x})
times = []
for _ in range(200):
    t = time.perf_counter()
    sess.run(None, {inp.name: x})
    times.append((time.perf_counter() - t) * 1e3)
times.sort()
print(json.dumps({"latency_ms": times[len(times) // 10]}))
PY
        ;;
    *)
        echo "board.sh: BOARD=${BOARD} is not set up; edit the steps above for your board" >&2
        exit 2
        ;;
esac
