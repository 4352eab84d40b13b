#!/usr/bin/env bash
# Installs what spacetune needs, idempotently and fast when it is already there:
#   - Fashion-MNIST from Debian (dataset-fashion-mnist),
#   - libtorch 2.13 for tch 0.26, unpacked from the torch wheel without the CUDA stack,
#   - a Python venv with Apache TVM 0.27 and ONNX Runtime (the tvm / ort backends).
# Downloads are cached outside the clone ($SPACETUNE_CACHE, default ~/.cache/spacetune) and
# linked into .deps/, where .cargo/config.toml looks for libtorch.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SPACETUNE_CACHE:-$HOME/.cache/spacetune}"
mkdir -p "$cache" "$root/.deps"
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

say() { printf 'setup: %s\n' "$*" >&2; }

# 1. Fashion-MNIST (IDX files under /usr/share/datasets/fashion-mnist).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    say "installing dataset-fashion-mnist"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

# 2. libtorch: the torch wheel's library, without the 2.7 GB CUDA stack (~1.25 GB).
torch="$cache/libtorch-2.13.0"
if [ ! -f "$torch/torch/lib/libtorch_cpu.so" ]; then
    say "installing libtorch 2.13.0 into $torch"
    rm -rf "$torch.tmp"
    python3 -m pip install -q --disable-pip-version-check --no-deps --target "$torch.tmp" \
        torch==2.13.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
    mv "$torch.tmp" "$torch"
fi
ln -sfn "$torch" "$root/.deps/libtorch"

# 3. Python venv for the TVM and ONNX Runtime backends, pinned: the measurement cache keys
#    on runtime versions (apache-tvm-ffi 0.1.15 also segfaults in tuning).
venv="$cache/venv"
stamp="$venv/.spacetune-2"
if [ ! -f "$stamp" ]; then
    say "installing the Python venv (TVM 0.27, ONNX Runtime) into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check \
        apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1 onnx==1.23.2 onnxruntime==1.32.0
    "$venv/bin/python" -c "import tvm, onnx, onnxruntime" >/dev/null
    touch "$stamp"
fi
ln -sfn "$venv" "$root/.deps/venv"
