"""Compiles an ONNX model to a shared library with Apache TVM (Relax) for spacetune's `tvm`
backend: `python tvm_compile.py MODEL.onnx OUT.so --pipeline fuse|plain`, or many models in
one process (TVM's import costs seconds): `python tvm_compile.py --batch LIST --pipeline P`,
LIST holding `MODEL.onnx<TAB>OUT.so` lines; each library is written beside and renamed when
complete, and a model that fails is reported and skipped. `--version` prints the versions of
TVM and TVM FFI as imported (the backend's fingerprint).

`fuse` is TVM's default CPU pipeline, `relax.get_default_pipeline(target)` for llvm
(FuseOps + FuseTIR) — note that `tvm.compile(relax_pipeline="default")` on a CPU target
takes the generic build pipeline, which does not fuse at all; `plain` is the CPU pipeline
without the two fusion passes, so every op runs as its own kernel and the effect of fusion
can be measured. Parameters are embedded as constants.

Two additions to the default pipeline, both applied to `fuse` and `plain` alike:
- DecomposeOpsForInference + CanonicalizeBindings first, as TVM's own tuning pipeline does:
  the ONNX frontend imports BatchNormalization as `relax.nn.batch_norm`, whose legalised form
  is a three-output kernel (output and updated statistics) that FuseOps cannot merge into a
  convolution; decomposed, inference batch norm is element-wise arithmetic that fuses into
  the convolution together with the activation.
- An epilogue schedule (below). Without tuning, a fused kernel is only the ops' loop nests
  side by side in one function: the element-wise epilogue still makes its own pass over the
  convolution's output in memory, so fusion saves a call and nothing else. Moving the
  epilogue under the convolution's output-channel loop is the minimal schedule every TVM CPU
  schedule applies; with it a fused conv+bn+relu reads its output while it is in cache.
"""
import argparse
import os
import sys

import onnx
import tvm
from tvm import relax, s_tir, tirx
from tvm.relax.backend.cpu_generic import pipeline as cpu
from tvm.relax.frontend.onnx import from_onnx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.schedule import ScheduleError

TARGET = {"kind": "llvm", "mcpu": "x86-64-v3"}
FUSION = ("FuseOps", "FuseTIR")


def schedule_epilogue(func):
    """One reduction followed by element-wise blocks: inline the element-wise chain into its
    last block and compute that under the reduction's second loop. None if not that shape."""
    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    if infos is None:
        return None
    reductions = [i for i, b in enumerate(infos) if b.is_reduction()]
    if len(reductions) != 1 or reductions[0] == len(infos) - 1:
        return None
    after = infos[reductions[0] + 1 :]
    if not all(b.is_injective() for b in after):
        return None
    for block in after[:-1]:
        sch.compute_inline(block.block_rv)
    loops = sch.get_loops(infos[reductions[0]].block_rv)
    sch.reverse_compute_at(after[-1].block_rv, loops[min(1, len(loops) - 1)])
    return sch.mod["main"]


@tvm.transform.module_pass(opt_level=0, name="ScheduleEpilogue")
def epilogue_pass(mod, _ctx):
    updated = {}
    for gv, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc):
            try:
                new = schedule_epilogue(func)
            except ScheduleError:
                new = None  # a kernel this simple schedule does not fit stays as it is
            if new is not None:
                updated[gv] = new
    for gv, func in updated.items():
        mod[gv] = func
    return mod


def pipeline(target, fuse):
    legalize = [p for p in cpu.legalize_passes(target) if fuse or p.info.name not in FUSION]

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod, _ctx):
        with target:
            seq = tvm.transform.Sequential(
                cpu.library_dispatch_passes(target)
                + legalize
                + [epilogue_pass]
                + cpu.dataflow_lower_passes(target)
                + cpu.finalize_passes(target)
            )
            return seq(mod)

    return _pipeline


def compile_one(model, out, fuse):
    mod = from_onnx(onnx.load(model), keep_params_in_input=False)
    mod = relax.transform.DecomposeOpsForInference()(mod)
    mod = relax.transform.CanonicalizeBindings()(mod)
    target = tvm.target.Target(TARGET)
    exe = tvm.compile(mod, target=target, relax_pipeline=pipeline(target, fuse))
    exe.export_library(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("out", nargs="?")
    ap.add_argument("--batch", help="a file of MODEL<TAB>OUT lines")
    ap.add_argument("--pipeline", choices=["fuse", "plain"], default="fuse")
    ap.add_argument("--version", action="store_true")
    args = ap.parse_args()
    if args.version:
        import tvm_ffi

        print(f"apache-tvm {tvm.__version__} tvm-ffi {tvm_ffi.__version__}")
        return
    fuse = args.pipeline == "fuse"
    if args.batch is None:
        compile_one(args.model, args.out, fuse)
        print(f"compiled {args.model} -> {args.out} ({args.pipeline})", file=sys.stderr)
        return
    failed = 0
    with open(args.batch) as f:
        jobs = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    for model, out in jobs:
        partial = out + ".partial.so"
        try:
            compile_one(model, partial, fuse)
            os.replace(partial, out)
        except Exception as e:  # one bad model must not stop the batch
            failed += 1
            print(f"failed {model}: {e}", file=sys.stderr)
    print(f"compiled {len(jobs) - failed} of {len(jobs)} ({args.pipeline})", file=sys.stderr)


if __name__ == "__main__":
    main()
