#!/usr/bin/env bash
# The GPU check, in one call on a machine with a CUDA GPU, CuPy, PyTorch,
# pytest and pytest-benchmark (no install, no network):
#
#   bash bench/gpu_check.sh [OUTDIR]     # default: $OUT, else bench/results/gpu-DATE
#
# 1. pytest -m gpu (parity with the CPU, fused kernels, every optimiser in the
#    captured step, graphs of several steps, the precisions' products and loss
#    scaling, no device-to-host copies per batch); 2. the GPU benchmarks
#    beside PyTorch's CUDA eager mode, its CUDA-graph-captured step and
#    torch.compile, TF32 off; 3. nnx's Adam beside PyTorch's fused Adam,
#    TF32 off; 4. the 784-4096-4096-10 network with TF32, bfloat16 and
#    float16 products beside PyTorch with the same settings (TF32 allowed
#    here); 5. a Fashion-MNIST-sized run (s per epoch, µs per step beside
#    the graphs' device time, and each precision's accuracy); 6. nnx's
#    MLPClassifier on the GPU beside scikit-learn on this CPU.
# Fashion-MNIST (stages 5 and 6) is read from .data/fashion-mnist/ when that
# folder is there (the GPU machine has no network: copy the four .gz files
# into it (.gitignore keeps it out of git) and carry it), else
# stage 5 uses synthetic rows and stage 6 digits alone.
# A dry run on a machine without a GPU (the emulated device; figures
# meaningless, code exercised):
#   PYTHONPATH=tests/emulated_site:tests bash bench/gpu_check.sh /tmp/dry-run
# Writes report.json and report.md (plus the raw logs) into OUTDIR; exits 2
# at once without a usable GPU (3 when nnx itself does not import), 1 when a
# gpu test failed or did not run. Each stage has its own time limit
# (80 + 150 + 60 + 70 + 100 + 60 = 520 s at most, under 9 minutes; a stage
# that reaches its limit loses only its own figures).
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
if [ -d .data/fashion-mnist ]; then export NNX_DATA="$PWD/.data"; fi
export PYTHONUNBUFFERED=1
export CUPY_TF32=0                # CuPy's own matmuls: full float32 (nnx's precisions
                                  # use cuBLAS handles of their own)
start=$(date +%s)

echo "== 1/6 pytest -m gpu (TF32 off for every cuBLAS user)"
NVIDIA_TF32_OVERRIDE=0 timeout -k 10 80 python3 -m pytest tests -m gpu -q -p no:cacheprovider \
  -p no:randomly --junitxml="$OUTDIR/gpu-tests.xml" 2>&1 | tee "$OUTDIR/gpu-tests.log"

# the benchmarks in two runs: pytest-benchmark writes its JSON only at the
# end, so a run stopped by its time limit keeps nothing
echo "== 2/6 GPU training and operation benchmarks (nnx; PyTorch eager, CUDA graph, compile), TF32 off"
NVIDIA_TF32_OVERRIDE=0 timeout -k 10 150 python3 -m pytest bench/test_train_throughput.py \
  bench/test_ops_bench.py -m "gpu and not precision" -q -p no:cacheprovider \
  --benchmark-json="$OUTDIR/bench.json" --benchmark-columns=median,ops \
  2>&1 | tee "$OUTDIR/bench.log"

echo "== 3/6 Adam: nnx beside PyTorch's fused Adam (eager and captured), TF32 off"
NVIDIA_TF32_OVERRIDE=0 timeout -k 10 60 python3 -m pytest bench/test_adam_throughput.py \
  -m "gpu and not precision" -q -p no:cacheprovider \
  --benchmark-json="$OUTDIR/bench-adam.json" --benchmark-columns=median,ops \
  2>&1 | tee "$OUTDIR/bench-adam.log"

echo "== 4/6 precisions: TF32, bfloat16, float16 products, nnx and PyTorch"
timeout -k 10 70 python3 -m pytest bench/test_precision_throughput.py -m precision -q \
  -p no:cacheprovider --benchmark-json="$OUTDIR/precision.json" \
  --benchmark-columns=median,ops 2>&1 | tee "$OUTDIR/precision.log"

echo "== 5/6 Fashion-MNIST-sized training run (and each precision's accuracy)"
timeout -k 10 100 python3 bench/gpu_train_run.py "$OUTDIR/train.json" 2>&1 \
  | tee "$OUTDIR/train.log"

echo "== 6/6 MLPClassifier: nnx on the GPU beside scikit-learn on the CPU"
timeout -k 10 60 python3 bench/sklearn_compare.py --repeats 1 --epochs 5 --dtypes float32 \
  --out "$OUTDIR" 2>&1 \
  | tee "$OUTDIR/sklearn.log"

python3 bench/gpu_report.py "$OUTDIR" --seconds $(( $(date +%s) - start ))
