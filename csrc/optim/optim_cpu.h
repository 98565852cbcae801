// Entry point of the CPU multi-tensor optimizer step: one table per instruction set, torch-free.
#pragma once
#include <cstdint>
#include "../common/storage.h"
#include "optim_functors.h"

namespace fastnn {

// One parameter tensor's part of a step. Every pointer addresses `numel` elements laid out alike
// (the wrapper guarantees it); state pointers an optimizer does not use are null.
struct OptSlot {
  void* param;
  const void* grad;
  void* state[3];
  int64_t numel;
  int flags;        // OptFlag bits
  double k[8];      // per-optimizer constants in double, see make_consts in optim_cpu_kernels.h
};

struct OptimCpuKernels {
  // grad_scale: null, or GradScaler's scale (gradients are divided by it in the same pass).
  void (*step)(OptKind kind, DType dtype, const OptSlot* slots, int64_t nslots, const float* grad_scale);
};

const OptimCpuKernels& optim_kernels_avx512();
const OptimCpuKernels& optim_kernels_avx2();
const OptimCpuKernels& optim_kernels_base();

}  // namespace fastnn
