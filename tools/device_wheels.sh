#!/usr/bin/env bash
# The wheels that issue 16's GPU checks (tools/device_checks.sh) carry to a lent device machine:
# the packages of requirements.lock that the device image (python3 3.12, torch 2.11.0+cu130,
# lightning, torchaudio, sentencepiece, safetensors, matplotlib, torchmetrics already there) lacks,
# at the lock's versions, into .whl/ (ignored by git). Run here, from the repository root:
#
#     bash tools/device_wheels.sh
#
# Binary wheels for CPython 3.12 on manylinux x86-64 come from the package index; the two that
# publish only a source archive (encodec, antlr4-python3-runtime: pure Python) are built into
# wheels here. About 21 MB, under the device tool's 64 MiB carry.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
BINARY="hydra-core omegaconf einx frozendict vector-quantize-pytorch torch-einops-utils soundfile
cffi pycparser loguru faiss-cpu"
SOURCE_ONLY="encodec antlr4-python3-runtime"

pin() {  # the lock's "name==version" of a package
  grep -i -m1 "^$1==" requirements.lock || { echo "$1 is not in requirements.lock" >&2; exit 1; }
}

rm -rf .whl && mkdir -p .whl
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  $(for p in $BINARY; do pin "$p"; done)
"$PYTHON" -m pip wheel --quiet --no-deps -w .whl $(for p in $SOURCE_ONLY; do pin "$p"; done)
ls .whl
du -sh .whl
