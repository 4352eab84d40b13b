"""Compiles an ONNX model to a shared library with Apache TVM (Relax) for spacetune's `tvm`
backend: `python tvm_compile.py MODEL.onnx OUT.so --pipeline fuse|plain`.

`fuse` is TVM's default CPU pipeline (FuseOps + FuseTIR); `plain` is the same pipeline
without the two fusion passes, so every op runs as its own kernel and the effect of fusion
can be measured. Parameters are embedded as constants.
"""
import argparse
import sys

import onnx
import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu
from tvm.relax.frontend.onnx import from_onnx

TARGET = {"kind": "llvm", "mcpu": "x86-64-v3"}


def plain_pipeline(target):
    fusion = ("FuseOps", "FuseTIR")
    legalize = [p for p in cpu.legalize_passes(target) if p.info.name not in fusion]

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod, _ctx):
        with target:
            seq = tvm.transform.Sequential(
                cpu.library_dispatch_passes(target)
                + legalize
                + cpu.dataflow_lower_passes(target)
                + cpu.finalize_passes(target)
            )
            return seq(mod)

    return _pipeline


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--pipeline", choices=["fuse", "plain"], default="fuse")
    args = ap.parse_args()
    mod = from_onnx(onnx.load(args.model), keep_params_in_input=False)
    target = tvm.target.Target(TARGET)
    pipeline = "default" if args.pipeline == "fuse" else plain_pipeline(target)
    exe = tvm.compile(mod, target=target, relax_pipeline=pipeline)
    exe.export_library(args.out)
    print(f"compiled {args.model} -> {args.out} ({args.pipeline})", file=sys.stderr)


if __name__ == "__main__":
    main()
