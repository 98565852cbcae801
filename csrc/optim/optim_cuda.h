// Torch-free entry point of the CUDA multi-tensor optimizer step (optim_cuda_kernels.cu).
#pragma once
#include <cstdint>

#include "optim_cpu.h"

namespace fastnn {

// dtype: 0 float32, 1 float64, 2 float16, 3 bfloat16. grad_scale / found_inf: device pointers or
// null; with found_inf set, every block returns before touching memory (capturable skip).
void cuda_optimizer_step(OptKind kind, int dtype, const OptSlot* slots, int64_t n, const float* grad_scale,
                         const float* found_inf, void* stream);

// Compact state: sdtype 0 float32 state of bf16 parameters, 3 bf16 state of float32 ones, 4 block-wise
// 8-bit codes (OptSlot::qscale: the block scales) of float32 or bf16 parameters; sr: bf16 stores
// and 8-bit codes rounded stochastically with OptSlot::sr_key. The same rule, codec and random bits as the CPU.
// Also bf16 parameters with bf16 state when sr. Returns false (nothing launched) for any other pair.
bool cuda_optimizer_step_compact(OptKind kind, int dtype, int sdtype, bool sr, const OptSlot* slots, int64_t n,
                                 const float* grad_scale, const float* found_inf, void* stream);

}  // namespace fastnn
