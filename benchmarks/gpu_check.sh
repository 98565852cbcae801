#!/usr/bin/env bash
# One visit to a GPU machine, sized for the device tool's limits (one command <= 10 min, 15 min of
# device time per session, machine start included): build fastnn from source with its CUDA kernels,
# check that C++ errors reach Python, then run stages in priority order, each under what is left of
# FASTNN_GPU_BUDGET_S (default 500 s after the build), so the command ends inside its limit with the
# logs of every stage that ran. Logs: $OUT/gpu_check.log (every stage, with its time) and
# $OUT/bench/results.json; the device tool brings back at most 8 files.
#
#   stages: compact  CUDA compact optimizer state + stochastic rounding tests (issue 20)
#           cuda     the other CUDA tests (linear_act, mlp, build)
#           q8bench  optim_compact_extras.py on 100M parameters (torch fused vs fastnn compact)
#           bench    python -m fastnn.bench $FASTNN_GPU_BENCH (default "optim mlp --quick")
#           profile  Nsight Compute on the fused MLP (benchmarks/profile_mlp_gpu.py) -> $OUT/ncu_mlp.txt
#           mlpcmp   benchmarks/mlp_gpu_compare.py: the fused MLP against eager, compile, per-layer
#           mlpdebug benchmarks/mlp_gpu_debug.py: both fused versions on integer data (exact), the
#                    (row%16, col%16) pattern of any wrong output: where a layout fault is
#           sanitize compute-sanitizer memcheck and racecheck on a small fused MLP (FASTNN_MLP_FUSED=2)
#           extras   benchmarks/gpu_extras.py
#           full     the whole suite with -n 8 (the CPU half is CI's; off by default)
#   FASTNN_GPU_STAGES="compact cuda mlpdebug sanitize mlpcmp profile q8bench" (the default) picks and orders them;
#   the order is what the open GPU work needs first (fused MLP v2 and the compact kernels unverified).
#
# Compiler: the system g++ unless FASTNN_CXX (and FASTNN_CC) name another. Some images set CXX to a
# wrapper whose links pull libstdc++ pieces into _C.so; every C++ error message that formats an
# integer then segfaults the process (std::ostream::_M_insert<long> resolved inside _C.so).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"9.0"}
export MAX_JOBS=${MAX_JOBS:-16}
export CXX=${FASTNN_CXX:-/usr/bin/g++}
export CC=${FASTNN_CC:-/usr/bin/gcc}
# The portable CPU table alone unless asked otherwise: the per-ISA tables are most of the build, and
# the GPU stages do not need them (the CPU suite is CI's).
export FASTNN_CPU_TABLES=${FASTNN_CPU_TABLES:-base}
export PYTHONUNBUFFERED=1
# The in-place build is imported by every stage's scripts, wherever they live.
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
say() { echo "$*" | tee -a "$LOG"; }
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  echo "CXX=$CXX CC=$CC FASTNN_CPU_TABLES=$FASTNN_CPU_TABLES MAX_JOBS=$MAX_JOBS TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
} 2>&1 | tee -a "$LOG"
t0=$SECONDS
if ! FASTNN_CUDA=1 python setup.py build_ext --inplace > "$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log" | tee -a "$LOG"; say "gpu_check: BUILD FAILED"; exit 1
fi
say "build: $((SECONDS - t0)) s"
python -c "import fastnn; assert fastnn.built_with_cuda(); print('built with CUDA')" 2>&1 | tee -a "$LOG"
# Smoke check in its own process: a mis-linked build dies here (negative exit status = signal).
python -m fastnn._smoke cpu cuda 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
if [ "$rc" != 0 ]; then
  say "gpu_check: SMOKE CHECK FAILED (exit $rc): C++ errors do not reach Python; is $CXX the system compiler?"
  exit 1
fi

budget_end=$((SECONDS + ${FASTNN_GPU_BUDGET_S:-500}))
status=0
# stage NAME CMD...: runs CMD with what is left of the budget, logs its output and time.
stage() {
  local name=$1; shift
  local left=$((budget_end - SECONDS))
  if [ "$left" -lt 20 ]; then say "== $name: skipped, budget spent"; return; fi
  say "== $name (up to $left s)"
  local t=$SECONDS
  timeout "$left" "$@" 2>&1 | tee -a "$LOG" | tail -25
  local rc=${PIPESTATUS[0]}
  say "== $name: exit $rc, $((SECONDS - t)) s"
  [ "$rc" = 0 ] || status=1
}
for s in ${FASTNN_GPU_STAGES:-compact cuda mlpdebug sanitize mlpcmp profile q8bench}; do
  case $s in
    compact) stage compact python -m pytest -m cuda -q -p no:cacheprovider tests/test_optim_compact.py ;;
    cuda) stage cuda python -m pytest -m cuda -q -p no:cacheprovider tests/test_cuda.py tests/test_mlp_cuda.py tests/test_build.py ;;
    q8bench) stage q8bench env PYTHONPATH=. FASTNN_CUDA_COMPACT_STATE=1 python benchmarks/optim_compact_extras.py \
               --device cuda --numel 100000000 ;;
    bench) stage bench python -m fastnn.bench ${FASTNN_GPU_BENCH:-optim mlp --quick} --device cuda --cuda-graphs \
             --no-plots --out "$OUT/bench" ;;
    profile) stage profile env FASTNN_MLP_FUSED=${FASTNN_PROFILE_VERSION:-2} PYTHONPATH=. ncu --clock-control none -k regex:mlp_ -c 2 \
               --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
               --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
               --section MemoryWorkloadAnalysis_Tables --section SchedulerStats --section InstructionStats \
               --log-file "$OUT/ncu_mlp.txt" python benchmarks/profile_mlp_gpu.py ${FASTNN_PROFILE_WIDTH:-64} ;;
    sanitize) stage sanitize bash -c "FASTNN_MLP_FUSED=2 compute-sanitizer --tool memcheck --error-exitcode 3 \
                python benchmarks/mlp_gpu_sanitize.py && FASTNN_MLP_FUSED=2 compute-sanitizer --tool racecheck \
                --error-exitcode 3 python benchmarks/mlp_gpu_sanitize.py" ;;
    mlpdebug) stage mlpdebug python benchmarks/mlp_gpu_debug.py ;;
    mlpcmp) stage mlpcmp env PYTHONPATH=. python benchmarks/mlp_gpu_compare.py ${FASTNN_MLPCMP_ARGS:-} ;;
    extras) stage extras bash -c "cd benchmarks && PYTHONPATH=.. python gpu_extras.py" ;;
    full) stage full python -m pytest -q -x -n 8 -p no:cacheprovider tests ;;
    *) say "gpu_check: unknown stage '$s'"; status=1 ;;
  esac
done
say "gpu_check: $([ $status = 0 ] && echo PASSED || echo FAILED) in $SECONDS s"
exit $status
