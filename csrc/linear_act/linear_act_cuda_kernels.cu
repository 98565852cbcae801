// CUDA kernels of fused Linear+activation (torch-free: compiles in seconds). The GEMMs are cuBLAS
// calls made by the wrapper (linear_act_cuda.cpp); these are the memory-bound passes around them,
// using the shared activation table: 16-byte accesses whenever pointers and widths allow, with a
// scalar form for the rest (views at odd offsets, widths that are not a multiple of the vector).
#include <cuda_runtime.h>

#include <cstdint>

#include "../common/activations.h"
#include "../common/cuda_storage.cuh"
#include "linear_act_cuda.h"

namespace fastnn {
namespace {

using namespace cuda_detail;

constexpr int kThreads = 256;

int device_sms() {
  static int cached[64] = {0};
  int dev = 0;
  cudaGetDevice(&dev);
  if (dev >= 0 && dev < 64 && cached[dev]) return cached[dev];
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (sms <= 0) sms = 1;
  if (dev >= 0 && dev < 64) cached[dev] = sms;
  return sms;
}

// Enough blocks of kThreads for `work` items, at most `waves` full waves of the GPU (grid-stride).
unsigned grid_for(int64_t work, int waves = 8) {
  const int64_t cap = int64_t(device_sms()) * (2048 / kThreads) * waves;
  int64_t b = (work + kThreads - 1) / kThreads;
  return unsigned(b < 1 ? 1 : (b < cap ? b : cap));
}

// y = act(src) over n elements; src may alias y. Vector form: n_vec 16-byte vectors, 2 in flight
// per thread, then the last n % V elements.
template <class T, Act A>
__global__ void epilogue_vec_kernel(const T* src, T* y, int64_t n, acc_t<T> slope) {
  constexpr int V = vec_elems<T>();
  const int64_t nv = n / V;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (; i + stride < nv; i += 2 * stride) {
    Vec<T> a = load_vec(src + i * V), b = load_vec(src + (i + stride) * V);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      a.e[e] = st<T>(act_value_for<A, T>(ld(a.e[e]), slope));
      b.e[e] = st<T>(act_value_for<A, T>(ld(b.e[e]), slope));
    }
    store_vec(y + i * V, a);
    store_vec(y + (i + stride) * V, b);
  }
  if (i < nv) {
    Vec<T> a = load_vec(src + i * V);
#pragma unroll
    for (int e = 0; e < V; ++e) a.e[e] = st<T>(act_value_for<A, T>(ld(a.e[e]), slope));
    store_vec(y + i * V, a);
  }
  const int64_t t = nv * V + blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t < n) y[t] = st<T>(act_value_for<A, T>(ld(src[t]), slope));
}

template <class T, Act A>
__global__ void epilogue_kernel(const T* src, T* y, int64_t n, acc_t<T> slope) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = st<T>(act_value_for<A, T>(ld(src[i]), slope));
}

// Backward, vector form (N % V == 0, 16-byte aligned rows). A block of kThreads covers `cvb`
// column vectors (a power of two <= 32) of rows r0.. r0 + rows: thread t takes column vector
// t % cvb of rows t / cvb, t / cvb + kThreads / cvb, ... It writes gz = g * act'(saved) and, when
// partial is given, the column sums of its chunk of rows, reduced in a fixed order (shared memory,
// then partial[chunk][col]): the result does not depend on scheduling.
template <class T, Act A>
__global__ void __launch_bounds__(kThreads) act_grad_vec_kernel(const T* __restrict__ g, const T* __restrict__ saved,
                                                                T* __restrict__ gz, acc_t<T>* __restrict__ partial,
                                                                int64_t M, int64_t N, int cvb, int64_t rows,
                                                                acc_t<T> slope) {
  using C = acc_t<T>;
  constexpr int V = vec_elems<T>();
  extern __shared__ unsigned char smem_raw[];
  C* red = reinterpret_cast<C*>(smem_raw);  // [kThreads / cvb][cvb * V]
  const int cv_local = threadIdx.x % cvb, rg = threadIdx.x / cvb, groups = kThreads / cvb;
  const int64_t cv = int64_t(blockIdx.x) * cvb + cv_local;
  const int64_t nvec = N / V;
  const int64_t r0 = int64_t(blockIdx.y) * rows;
  const int64_t r1 = r0 + rows < M ? r0 + rows : M;
  C acc[V];
#pragma unroll
  for (int e = 0; e < V; ++e) acc[e] = C(0);
  if (cv < nvec) {
    int64_t r = r0 + rg;
    for (; r + groups < r1; r += 2 * groups) {
      const int64_t i0 = r * N + cv * V, i1 = (r + groups) * N + cv * V;
      Vec<T> ga = load_vec(g + i0), sa = load_vec(saved + i0), gb = load_vec(g + i1), sb = load_vec(saved + i1);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const C va = ld(ga.e[e]) * ActFn<A>::grad(ld(sa.e[e]), slope);
        const C vb = ld(gb.e[e]) * ActFn<A>::grad(ld(sb.e[e]), slope);
        ga.e[e] = st<T>(va);
        gb.e[e] = st<T>(vb);
        acc[e] += va;
        acc[e] += vb;
      }
      store_vec(gz + i0, ga);
      store_vec(gz + i1, gb);
    }
    if (r < r1) {
      const int64_t i0 = r * N + cv * V;
      Vec<T> ga = load_vec(g + i0), sa = load_vec(saved + i0);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const C va = ld(ga.e[e]) * ActFn<A>::grad(ld(sa.e[e]), slope);
        ga.e[e] = st<T>(va);
        acc[e] += va;
      }
      store_vec(gz + i0, ga);
    }
  }
  if (!partial) return;
#pragma unroll
  for (int e = 0; e < V; ++e) red[rg * (cvb * V) + cv_local * V + e] = acc[e];
  __syncthreads();
  for (int c = threadIdx.x; c < cvb * V; c += kThreads) {
    const int64_t col = int64_t(blockIdx.x) * cvb * V + c;
    if (col >= N) continue;
    C s = 0;
    for (int k = 0; k < groups; ++k) s += red[k * (cvb * V) + c];
    partial[int64_t(blockIdx.y) * N + col] = s;
  }
}

// Scalar form of the same pass (any N, any alignment): block (32, 8) over 32 columns.
template <class T, Act A>
__global__ void act_grad_kernel(const T* __restrict__ g, const T* __restrict__ saved, T* __restrict__ gz,
                                acc_t<T>* __restrict__ partial, int64_t M, int64_t N, int64_t rows, acc_t<T> slope) {
  using C = acc_t<T>;
  __shared__ C red[8][33];
  const int64_t col = blockIdx.x * 32 + threadIdx.x;
  const int64_t r0 = blockIdx.y * rows;
  const int64_t r1 = r0 + rows < M ? r0 + rows : M;
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

// gb[col] = sum over chunks of partial[chunk][col]: block (32, 32) over 32 columns, thread (x, y)
// sums chunks y, y + 32, ..., then the 32 sums in order.
template <class T>
__global__ void reduce_partials_kernel(const acc_t<T>* __restrict__ partial, T* __restrict__ gb, int64_t chunks,
                                       int64_t N) {
  using C = acc_t<T>;
  __shared__ C red[32][33];
  const int64_t col = blockIdx.x * 32 + threadIdx.x;
  C s = 0;
  if (col < N)
    for (int64_t c = threadIdx.y; c < chunks; c += 32) s += partial[c * N + col];
  red[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < N) {
    C t = 0;
    for (int k = 0; k < 32; ++k) t += red[k][threadIdx.x];
    gb[col] = st<T>(t);
  }
}

int pow2_at_least(int64_t x, int cap) {
  int p = 1;
  while (p < x && p < cap) p *= 2;
  return p;
}

}  // namespace

void cuda_linear_act_epilogue(int dtype, const void* src, void* y, int64_t n, int act, double slope, void* stream) {
  if (n == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  dispatch_cuda_dtype(CudaDType(dtype), [&](auto tag) {
    using T = decltype(tag);
    const T* a = static_cast<const T*>(src);
    T* b = static_cast<T*>(y);
    dispatch_act(Act(act), [&](auto t) {
      constexpr Act A = decltype(t)::value;
      if (aligned16(a) && aligned16(b))
        epilogue_vec_kernel<T, A><<<grid_for(n / vec_elems<T>() / 2 + 1), kThreads, 0, s>>>(a, b, n, acc_t<T>(slope));
      else
        epilogue_kernel<T, A><<<grid_for(n), kThreads, 0, s>>>(a, b, n, acc_t<T>(slope));
    });
  });
}

// Rows per chunk of the bias-gradient reduction: a function of M alone (so the summation order, and
// the result, depend only on the shape): chunks of 32 rows or more, 512 to 1024 of them for large M
// (enough blocks to fill the GPU, few enough partial sums to reduce).
int64_t cuda_bias_grad_rows(int64_t M) {
  int64_t rows = 32;
  while (rows * 1024 < M) rows *= 2;
  return rows;
}

int64_t cuda_bias_grad_chunks(int64_t M) {
  const int64_t rows = cuda_bias_grad_rows(M);
  return (M + rows - 1) / rows;
}

void cuda_linear_act_backward_act_bias(int dtype, const void* g, const void* saved, void* gz, void* gb, void* partial,
                                       int64_t M, int64_t N, int act, double slope, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int64_t rows = cuda_bias_grad_rows(M);
  const int64_t chunks = cuda_bias_grad_chunks(M);
  dispatch_cuda_dtype(CudaDType(dtype), [&](auto tag) {
    using T = decltype(tag);
    using C = acc_t<T>;
    constexpr int V = vec_elems<T>();
    const T* gp = static_cast<const T*>(g);
    const T* sp = static_cast<const T*>(saved);
    T* zp = static_cast<T*>(gz);
    C* pp = gb ? static_cast<C*>(partial) : nullptr;
    if (M > 0 && N > 0) {
      const bool vec = N % V == 0 && aligned16(gp) && aligned16(sp) && aligned16(zp);
      dispatch_act(Act(act), [&](auto a) {
        constexpr Act A = decltype(a)::value;
        if (vec) {
          const int cvb = pow2_at_least(N / V, 32);
          dim3 grid(unsigned((N / V + cvb - 1) / cvb), unsigned(chunks));
          const size_t smem = sizeof(C) * kThreads * V;
          act_grad_vec_kernel<T, A><<<grid, kThreads, smem, s>>>(gp, sp, zp, pp, M, N, cvb, rows, C(slope));
        } else {
          dim3 grid(unsigned((N + 31) / 32), unsigned(chunks));
          act_grad_kernel<T, A><<<grid, dim3(32, 8), 0, s>>>(gp, sp, zp, pp, M, N, rows, C(slope));
        }
      });
    }
    if (gb && N > 0)
      reduce_partials_kernel<T><<<unsigned((N + 31) / 32), dim3(32, 32), 0, s>>>(static_cast<const C*>(partial),
                                                                                static_cast<T*>(gb), chunks, N);
  });
}

}  // namespace fastnn
