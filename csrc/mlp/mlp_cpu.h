// Entry points of the cache-blocked CPU kernels of fastnn::mlp: one table per instruction set,
// torch-free. All matrices are row-major and contiguous.
#pragma once
#include <cstdint>
#include "../common/storage.h"

namespace fastnn {

struct MlpCpuLayer {
  const void* w;      // [N, K]
  const void* b;      // [N] or null
  int64_t K, N;
  int act;
  double slope;
  bool saves_output;  // backward's saved tensor is the layer's output (else its pre-activation)
  void* saved;        // [M, N]: where forward writes it / backward reads it (the output, for the last
                      // layer when it saves its output); null in an output-only forward
};

struct MlpCpuKernels {
  // The whole chain on tiles of rows that stay in cache from the first layer to the last:
  // out[M, N_last] and every layer's saved block from x[M, K_0].
  void (*forward)(DType, const void* x, void* out, const MlpCpuLayer* layers, int L, int64_t M);
  // The whole backward from g[M, N_last], tile by tile through every layer. gw[l] ([N, K]) always,
  // gb[l] ([N]) where not null, gi ([M, K_0]) when not null. Weight and bias gradients are summed
  // per fixed chunk of rows and the chunks added in order: the same bits for any thread count.
  void (*backward)(DType, const void* g, const void* x, const MlpCpuLayer* layers, int L, int64_t M, void* gi,
                   void* const* gw, void* const* gb);
};

const MlpCpuKernels& mlp_kernels_amx_bf16();
const MlpCpuKernels& mlp_kernels_amx_bf16_emulated();
const MlpCpuKernels& mlp_kernels_avx512_bf16();
const MlpCpuKernels& mlp_kernels_avx512();
const MlpCpuKernels& mlp_kernels_avx2();
const MlpCpuKernels& mlp_kernels_base();

}  // namespace fastnn
