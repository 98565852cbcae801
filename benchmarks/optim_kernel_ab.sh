#!/usr/bin/env bash
# Same-process A/B of the CPU optimizer kernels: the working tree's against revision BASE's, one ISA
# table's (avx2 unless ISA names another the CPU runs), every kind, in one executable
# (optim_kernel_ab.cpp). The kernels are torch-free, so this needs only g++ with OpenMP.
#   bash benchmarks/optim_kernel_ab.sh BASE [ISA] [N] [PAIRS]
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: optim_kernel_ab.sh BASE [ISA] [N] [PAIRS]}
isa=${2:-avx2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/old"
git archive "$base" csrc | tar -x -C "$work/old"
flags="-O3 -g0 -fopenmp -fno-math-errno -fno-trapping-math -Wno-unused-function -std=c++20"
objs=()
for tree in old new; do
  root=$([ $tree = old ] && echo "$work/old/csrc" || echo "$PWD/csrc")
  for k in Adam RMSprop SGD Adagrad; do
    src="$work/${tree}_$k.cpp"
    cat > "$src" <<CPP
#include "cpu_isa/isa_$isa.h"
#undef FASTNN_ISA_NS
#define FASTNN_ISA_NS ab_$tree
#include "optim/optim_cpu_kernels.h"
FASTNN_OPTIM_KIND_INSTANCES($k)
namespace fastnn {
void run_${tree}_$k(DType d, DType sd, bool q8, const OptSlot* s, int64_t n) {
  if (q8) ab_$tree::optim_cpu::step_q8_kind<OptKind::$k>(d, false, s, n, nullptr);
  else ab_$tree::optim_cpu::step_kind<OptKind::$k>(d, sd, false, s, n, nullptr);
}
}  // namespace fastnn
CPP
    objs+=("$src.o")
    echo "c++ $flags -I$root -c $src -o $src.o"
  done
done > "$work/jobs"
xargs -P "${MAX_JOBS:-2}" -I{} sh -c {} < "$work/jobs"
c++ $flags -Icsrc benchmarks/optim_kernel_ab.cpp "${objs[@]}" -o "$work/ab"
echo "optimizer kernels, $isa table: working tree (new) against $base (old); $(grep -m1 'model name' /proc/cpuinfo)"
"$work/ab" "${3:-262144}" "${4:-300}"
