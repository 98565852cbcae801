#!/usr/bin/env bash
# One visit to a GPU machine: build fastnn from source with its CUDA kernels, run the CUDA tests
# and the GPU benchmarks, and leave the logs in $OUT (or ./gpu-results).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"9.0"}
export MAX_JOBS=${MAX_JOBS:-16}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} 2>&1 | tee "$OUT/device.txt"
pip install -q pytest hypothesis >/dev/null 2>&1 || true
FASTNN_CUDA=1 python setup.py build_ext --inplace 2>&1 | tail -20 > "$OUT/build.log"
python -c "import fastnn; assert fastnn.built_with_cuda(); print('built with CUDA')" 2>&1 | tee -a "$OUT/build.log"
python -m pytest -m cuda -q tests/test_cuda.py 2>&1 | tee "$OUT/pytest-cuda.log" | tail -30
python -m pytest -q -x tests/test_linear_act.py tests/test_optim.py 2>&1 | tail -3 | tee "$OUT/pytest-cpu.log"
(cd benchmarks && python bench_gpu.py) 2>&1 | tee "$OUT/bench_gpu.md"
