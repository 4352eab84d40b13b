"""The runtimes' own timers, for spacetune's overhead benchmark: times one model the way a
Python user of the runtime would, and prints the statistics as JSON.

  python runtime_timers.py ort MODEL.onnx RUNS
  python runtime_timers.py tvm LIBRARY.so RUNS
"""
import json
import sys
import time

import numpy as np


def stats(ms):
    ms = sorted(ms)
    return {"p10_ms": float(np.percentile(ms, 10)), "median_ms": float(np.median(ms)), "runs": len(ms)}


def ort(model, runs):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    shape = sess.get_inputs()[0].shape
    x = {"input": np.full(shape, 0.5, dtype=np.float32)}
    for _ in range(20):
        sess.run(None, x)
    ms = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, x)
        ms.append((time.perf_counter() - t) * 1e3)
    return stats(ms)


def tvm(library, runs):
    import tvm
    from tvm import relax

    dev = tvm.cpu()
    vm = relax.VirtualMachine(tvm.runtime.load_module(library), dev)
    # The benchmark passes the input shape (the library does not state it cheaply).
    import os

    dims = [int(d) for d in os.environ["SPACETUNE_INPUT_SHAPE"].split(",")]
    x = tvm.runtime.tensor(np.full(dims, 0.5, dtype=np.float32), dev)
    timer = vm.time_evaluator("main", dev, number=1, repeat=runs, min_repeat_ms=0)
    result = timer(x)
    return stats([r * 1e3 for r in result.results])


if __name__ == "__main__":
    kind, path, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps({"ort": ort, "tvm": tvm}[kind](path, runs)))
