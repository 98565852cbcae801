// Torch-free entry points of the CUDA Linear+activation kernels (linear_act_cuda_kernels.cu).
// dtype: 0 float32, 1 float64, 2 float16, 3 bfloat16. stream: a cudaStream_t.
#pragma once
#include <cstdint>

namespace fastnn {

// y <- act(src) over M*N elements (src = x @ W^T + bias from cuBLAS); src may be y (in place).
void cuda_linear_act_epilogue(int dtype, const void* src, void* y, int64_t n, int act, double slope, void* stream);

// Rows per chunk of the deterministic bias-gradient reduction, and the chunk count for M rows.
int64_t cuda_bias_grad_chunks(int64_t M);

// gz = g * act'(saved); gb = column sums of gz (when gb != nullptr) through `partial`, a scratch
// buffer of cuda_bias_grad_chunks(M) * N accumulators (float, or double for float64).
void cuda_linear_act_backward_act_bias(int dtype, const void* g, const void* saved, void* gz, void* gb, void* partial,
                                       int64_t M, int64_t N, int act, double slope, void* stream);

}  // namespace fastnn
