// CUDA kernels of fused Linear+activation (torch-free: compiles in seconds). The GEMMs are cuBLAS
// calls made by the wrapper (linear_act_cuda.cpp); these are the fused passes around them, using
// the shared activation table.
#include <cuda_runtime.h>

#include <cstdint>

#include "../common/activations.h"
#include "../common/cuda_storage.cuh"
#include "linear_act_cuda.h"

namespace fastnn {
namespace {

using namespace cuda_detail;

constexpr int kThreads = 256;
constexpr int64_t kRowsPerChunk = 64;

inline int grid_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return int(b < 65535 * 4 ? (b > 0 ? b : 1) : 65535 * 4);
}

// One thread per element, grid-stride; src may alias y.
template <class T, Act A>
__global__ void epilogue_kernel(const T* src, T* y, int64_t n, acc_t<T> slope) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = st<T>(ActFn<A>::value(ld(src[i]), slope));
}

// Block (32, 8) covers 32 columns of one chunk of rows: writes gz and one partial column sum per
// column into partial[chunk][col] (a fixed order: the result does not depend on scheduling).
template <class T, Act A>
__global__ void act_grad_partial_kernel(const T* __restrict__ g, const T* __restrict__ saved, T* __restrict__ gz,
                                        acc_t<T>* __restrict__ partial, int64_t M, int64_t N, acc_t<T> slope) {
  using C = acc_t<T>;
  __shared__ C red[8][33];
  const int64_t col = blockIdx.x * 32 + threadIdx.x;
  const int64_t r0 = blockIdx.y * kRowsPerChunk;
  const int64_t r1 = r0 + kRowsPerChunk < M ? r0 + kRowsPerChunk : M;
  C acc = 0;
  if (col < N) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
      const int64_t i = r * N + col;
      C v = ld(g[i]) * ActFn<A>::grad(ld(saved[i]), slope);
      gz[i] = st<T>(v);
      acc += v;
    }
  }
  if (partial) {
    red[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && col < N) {
      C s = 0;
      for (int k = 0; k < 8; ++k) s += red[k][threadIdx.x];
      partial[blockIdx.y * N + col] = s;
    }
  }
}

template <class T>
__global__ void reduce_partials_kernel(const acc_t<T>* __restrict__ partial, T* __restrict__ gb, int64_t chunks,
                                       int64_t N) {
  const int64_t col = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (col >= N) return;
  acc_t<T> s = 0;
  for (int64_t c = 0; c < chunks; ++c) s += partial[c * N + col];
  gb[col] = st<T>(s);
}

}  // namespace

void cuda_linear_act_epilogue(int dtype, const void* src, void* y, int64_t n, int act, double slope, void* stream) {
  if (n == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  dispatch_cuda_dtype(CudaDType(dtype), [&](auto tag) {
    using T = decltype(tag);
    dispatch_act(Act(act), [&](auto a) {
      epilogue_kernel<T, decltype(a)::value><<<grid_for(n), kThreads, 0, s>>>(static_cast<const T*>(src),
                                                                              static_cast<T*>(y), n, acc_t<T>(slope));
    });
  });
}

int64_t cuda_bias_grad_chunks(int64_t M) { return (M + kRowsPerChunk - 1) / kRowsPerChunk; }

void cuda_linear_act_backward_act_bias(int dtype, const void* g, const void* saved, void* gz, void* gb, void* partial,
                                       int64_t M, int64_t N, int act, double slope, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int64_t chunks = cuda_bias_grad_chunks(M);
  dispatch_cuda_dtype(CudaDType(dtype), [&](auto tag) {
    using T = decltype(tag);
    using C = acc_t<T>;
    if (M > 0 && N > 0) {
      dim3 grid(unsigned((N + 31) / 32), unsigned(chunks));
      dispatch_act(Act(act), [&](auto a) {
        act_grad_partial_kernel<T, decltype(a)::value><<<grid, dim3(32, 8), 0, s>>>(
            static_cast<const T*>(g), static_cast<const T*>(saved), static_cast<T*>(gz),
            gb ? static_cast<C*>(partial) : nullptr, M, N, C(slope));
      });
    }
    if (gb && N > 0)
      reduce_partials_kernel<T><<<unsigned((N + 255) / 256), 256, 0, s>>>(static_cast<const C*>(partial),
                                                                          static_cast<T*>(gb), chunks, N);
  });
}

}  // namespace fastnn
