#!/usr/bin/env bash
# The GPU check, in one call on a machine with a CUDA GPU, CuPy, PyTorch,
# pytest and pytest-benchmark (no install, no network):
#
#   bash bench/gpu_check.sh [OUTDIR]     # default: $OUT, else bench/results/gpu-DATE
#
# 1. pytest -m gpu (parity with the CPU, fused kernels, every optimiser in the
#    captured step, no device-to-host copies per batch); 2. the GPU benchmarks
#    beside PyTorch's CUDA eager mode, and nnx's Adam beside PyTorch's fused
#    Adam (eager and captured), TF32 off on both; 3. a Fashion-MNIST-sized run;
# 4. nnx's MLPClassifier on the GPU beside scikit-learn's on this CPU
#    (bench/sklearn_compare.py; Fashion-MNIST where its files are present).
# Writes report.json and report.md (plus the raw logs) into OUTDIR; exits 2
# at once without a usable GPU (3 when nnx itself does not import), 1 when a
# gpu test failed or did not run. Each stage has its own time limit
# (120 + 270 + 60 + 60 s): the whole script stays under 8.5 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-${OUT:-bench/results/gpu-$(date +%Y%m%d)}}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# nnx itself must import, or every stage would fail for a reason that is not the GPU's
if ! python3 -c 'import nnx'
then
  echo "gpu_check: cannot import nnx (its traceback is above), so nothing ran" >&2
  exit 3
fi
# no GPU, no report: a report of "not run" rows would read like a failed device
if ! python3 -c 'import sys, nnx; ok, why = nnx.gpu_available(); sys.exit(0 if ok else why)'
then
  echo "gpu_check: no usable GPU here, so nothing ran and no report was written" >&2
  exit 2
fi
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1
export CUPY_TF32=0                # CuPy: full float32 matmuls
export NVIDIA_TF32_OVERRIDE=0     # and for every cuBLAS user, PyTorch included
start=$(date +%s)

echo "== 1/4 pytest -m gpu"
timeout 120 python3 -m pytest tests -m gpu -q -p no:cacheprovider -p no:randomly \
  --junitxml="$OUTDIR/gpu-tests.xml" 2>&1 | tee "$OUTDIR/gpu-tests.log"

echo "== 2/4 GPU benchmarks (nnx; PyTorch CUDA eager, fused Adam eager and captured)"
timeout 270 python3 -m pytest bench -m gpu -q -p no:cacheprovider \
  --benchmark-json="$OUTDIR/bench.json" --benchmark-columns=median,ops 2>&1 \
  | tee "$OUTDIR/bench.log"

echo "== 3/4 Fashion-MNIST-sized training run"
timeout 60 python3 bench/gpu_train_run.py "$OUTDIR/train.json" 2>&1 | tee "$OUTDIR/train.log"

echo "== 4/4 MLPClassifier: nnx on the GPU beside scikit-learn on the CPU"
timeout 60 python3 bench/sklearn_compare.py --repeats 1 --epochs 2 --out "$OUTDIR" 2>&1 \
  | tee "$OUTDIR/sklearn.log"

python3 bench/gpu_report.py "$OUTDIR" --seconds $(( $(date +%s) - start ))
