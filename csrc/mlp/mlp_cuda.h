// Torch-free entry points of the fully fused CUDA MLP (mlp_cuda_kernels.cu): a tile of rows goes
// through every layer inside one kernel, activations in shared memory, GEMMs on tensor cores
// (WMMA, fp16/bf16 operands, fp32 accumulation). dtype: 2 float16, 3 bfloat16 (cuda_storage.cuh).
#pragma once
#include <cstdint>

namespace fastnn {

// Widths the fused kernels take: every layer's in and out features at most this; hidden widths
// (the outputs of all layers but the last) multiples of kMlpFusedAlign. The input and output
// widths are padded inside the kernel.
constexpr int kMlpFusedMaxWidth = 128;
constexpr int kMlpFusedAlign = 16;
constexpr int kMlpFusedMaxLayers = 16;
// The version of the fused kernels a measured path choice runs (fastnn.mlp, and linear_act's one-layer
// case): 1, verified on an H100 and an H200; version 2 joins once a GPU has run its tests (until then only
// FASTNN_MLP_FUSED=2 runs it).
constexpr int kMlpMeasuredFusedVersion = 1;

struct MlpCudaLayer {
  const void* w;  // [out, in], contiguous
  const void* b;  // [out] or null
  int in, out;
  int act;
  float slope;
  bool saves_output;
  void* saved;    // forward: where this layer's saved block goes (null: not kept); backward: read
  void* dz;       // backward: gradient w.r.t. this layer's pre-activation, [M, out]
  float* bias_partial;  // backward: [blocks, out] partial column sums of dz (null: no bias)
};

// Rows per block of the fused kernels for the chain's widest layer (the row-tile count sizes
// the bias partials: cuda_mlp_fused_blocks).
int64_t cuda_mlp_fused_blocks(int64_t M, int max_width);

// version: 1 the WMMA kernels with an fp32 staging tile (tested on an H100, slower than the per-layer
// path), 2 weight-stationary mma.sync with the epilogue on the accumulators (benchmarks/GPU_NOTES.md;
// not yet run on a GPU). Both take and write the same tensors, in 128-row tiles.
// x: [M, layers[0].in]; out: [M, layers[L-1].out]. Saves layers' blocks where layers[l].saved.
void cuda_mlp_fused_forward(int version, int dtype, const void* x, void* out, const MlpCudaLayer* layers, int L,
                            int64_t M, int max_width, void* stream);

// g: [M, layers[L-1].out]. Writes every layer's dz (and bias_partial), and gin ([M, layers[0].in])
// unless null.
void cuda_mlp_fused_backward(int version, int dtype, const void* g, void* gin, const MlpCudaLayer* layers, int L,
                             int64_t M, int max_width, void* stream);

}  // namespace fastnn
