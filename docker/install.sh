#!/usr/bin/env bash
# Install the rsd service into a new virtual environment, with every package pinned by constraints.txt.
#
#   docker/install.sh PREFIX cpu|gpu
#
#   cpu: .[serve,cpu]
#        ONNX Runtime on the CPU, no torch
#   gpu: .[serve,gpu] + tensorrt-cu13 + torch + onnx
#        ONNX Runtime CUDA and TensorRT; the TensorRT backend keeps its device buffers in torch CUDA
#        tensors, and the engine build at the first start (docker/gpu_entrypoint.py) reads the graph's
#        metadata with onnx
#
# The project is the folder above this script. Both images run this script (Dockerfile), and
# tests/test_deploy_install.py runs it into a fresh environment and serves from it, so what the images
# install is what the tests exercise. PYTHON picks the interpreter (default python3).
set -euo pipefail

usage() {
    echo "usage: $0 PREFIX cpu|gpu" >&2
    exit 2
}

[[ $# -eq 2 ]] || usage
prefix=$1
flavour=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(dirname "$here")

case "$flavour" in
    cpu) packages=("${project}[serve,cpu]") ;;
    gpu) packages=("${project}[serve,gpu]" tensorrt-cu13 torch onnx) ;;
    *) usage ;;
esac

if [[ -e "$prefix" ]]; then
    echo "$0: $prefix exists; give a new path" >&2
    exit 2
fi

"${PYTHON:-python3}" -m venv "$prefix"
# Through the environment, the pins also hold in pip's isolated build of the project (setuptools).
PIP_CONSTRAINT="$here/constraints.txt" "$prefix/bin/python" -m pip install \
    --disable-pip-version-check --no-input "${packages[@]}"
"$prefix/bin/python" -m pip check --disable-pip-version-check
echo "installed rsd ($flavour) into $prefix"
