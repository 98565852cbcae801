#!/usr/bin/env bash
# One visit to a GPU machine: build fastnn from source with its CUDA kernels, check that C++ errors
# reach Python, run the CUDA tests and the GPU benchmarks, and leave the logs in $OUT (or ./gpu-results).
#
# Compiler: the system g++ unless FASTNN_CXX (and FASTNN_CC) name another. Some images set CXX to a
# wrapper whose links pull libstdc++ pieces into _C.so; every C++ error message that formats an
# integer then segfaults the process (std::ostream::_M_insert<long> resolved inside _C.so).
# FASTNN_GPU_FULL_SUITE=0 skips the CPU suite; FASTNN_GPU_BENCH="optim linear_act --quick" picks benchmarks.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"9.0"}
export MAX_JOBS=${MAX_JOBS:-16}
export CXX=${FASTNN_CXX:-/usr/bin/g++}
export CC=${FASTNN_CC:-/usr/bin/gcc}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  echo "CXX=$CXX CC=$CC"
} 2>&1 | tee "$OUT/device.txt"
pip install -q pytest hypothesis >/dev/null 2>&1 || true
if ! FASTNN_CUDA=1 python setup.py build_ext --inplace > "$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"; echo "gpu_check: BUILD FAILED"; exit 1
fi
python -c "import fastnn; assert fastnn.built_with_cuda(); print('built with CUDA')" 2>&1 | tee -a "$OUT/build.log"
# Smoke check in its own process: a mis-linked build dies here (negative exit status = signal).
python -m fastnn._smoke cpu cuda 2>&1 | tee "$OUT/smoke.log"
rc=${PIPESTATUS[0]}
if [ "$rc" != 0 ]; then
  echo "gpu_check: SMOKE CHECK FAILED (exit $rc): C++ errors do not reach Python; is $CXX the system compiler?"
  exit 1
fi
status=0
python -m pytest -m cuda -q tests/test_cuda.py tests/test_mlp_cuda.py tests/test_build.py 2>&1 | tee "$OUT/pytest-cuda.log" | tail -30
[ "${PIPESTATUS[0]}" = 0 ] || status=1
# Compact optimizer state and stochastic rounding on CUDA (unverified until this passes on a GPU).
python -m pytest -m cuda -q tests/test_optim_compact.py 2>&1 | tee "$OUT/pytest-cuda-compact.log" | tail -30
[ "${PIPESTATUS[0]}" = 0 ] || status=1
(PYTHONPATH=. PYTHONUNBUFFERED=1 FASTNN_CUDA_COMPACT_STATE=1 python benchmarks/optim_compact_extras.py --device cuda \
  --numel 100000000) 2>&1 | tee "$OUT/optim_compact_cuda.md"
if [ "${FASTNN_GPU_FULL_SUITE:-1}" = 1 ]; then
  python -m pytest -q -x -n 8 tests 2>&1 | tail -5 | tee "$OUT/pytest-all.log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
PYTHONUNBUFFERED=1 python -m fastnn.bench ${FASTNN_GPU_BENCH:-all} --device cuda --cuda-graphs --out "$OUT" 2>&1 | tee "$OUT/bench.md"
(cd benchmarks && PYTHONPATH=.. PYTHONUNBUFFERED=1 python gpu_extras.py) 2>&1 | tee "$OUT/gpu_extras.md"
echo "gpu_check: tests $([ $status = 0 ] && echo PASSED || echo FAILED)"
exit $status
