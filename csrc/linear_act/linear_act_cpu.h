// Entry points of the CPU Linear+activation kernels: one table per instruction set, torch-free.
// Matrices are row-major and contiguous, except g, whose rows are ldg elements apart (0: one row
// broadcast to all, as from .sum()); `act` is an fastnn::Act code.
#pragma once
#include <cstdint>
#include "../common/storage.h"

namespace fastnn {

struct LinearActCpuKernels {
  // y[M,N] <- act(src + bias) (bias may be null); src is the BLAS output and may be y (in place).
  void (*forward_epilogue)(DType, const void* src, const void* bias, void* y, int64_t M, int64_t N, int act,
                           double slope);
  // Small in_features: y = act(x[M,K] @ wt[K,N] + bias) in one pass, no BLAS call.
  void (*forward_direct)(DType, const void* x, const void* wt, const void* bias, void* y, void* z,
                         int64_t M, int64_t N, int64_t K, int act, double slope);
  // gz = g * act'(saved) and, when gb != nullptr, gb = column sums of gz, in one pass; with
  // gz == nullptr (identity) only gb.
  void (*backward_act_bias)(DType, const void* g, int64_t ldg, const void* saved, void* gz, void* gb,
                            int64_t M, int64_t N, int act, double slope);
  // Small in_features: gi = gz @ W, gw = gz^T @ x, gb = sum gz, all from one pass over g and saved;
  // any of gi/gw/gb may be nullptr. w is [N,K], x [M,K].
  void (*backward_direct)(DType, const void* g, int64_t ldg, const void* saved, const void* x, const void* w,
                          void* gi, void* gw, void* gb, int64_t M, int64_t N, int64_t K, int act,
                          double slope);
};

const LinearActCpuKernels& linear_act_kernels_avx512_bf16();
const LinearActCpuKernels& linear_act_kernels_avx512();
const LinearActCpuKernels& linear_act_kernels_avx2();
const LinearActCpuKernels& linear_act_kernels_base();

}  // namespace fastnn
