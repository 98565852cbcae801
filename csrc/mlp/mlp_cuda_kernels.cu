// The fully fused MLP on CUDA (torch-free). A block owns kRows = 16 * kWarps rows of the batch and
// runs them through every layer: the rows' activations stay in shared memory, each layer's weight
// is staged in shared memory once per block, and each warp multiplies its 16 rows on the tensor
// cores (WMMA m16n16k16, fp16/bf16 operands, fp32 accumulation). The fp32 products go through a
// per-warp staging tile where bias, activation (the shared table, activations.h) and rounding are
// applied, as a per-layer run would round them. Widths are padded to multiples of 16 in shared
// memory (zeros), so the input and output widths are free; hidden widths are multiples of 16.
//
// Forward writes each layer's saved block (its output or pre-activation, as linear_act decides)
// when training, and only the output for inference. Backward goes the other way through the same
// tile: dz_l = dy_l * act'(saved_l) -> global (for the weight-gradient GEMMs, done by cuBLAS in
// the wrapper) and per-block column sums (bias gradient, reduced by the wrapper in a fixed order);
// dy_{l-1} = dz_l @ W_l on the tensor cores.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

#include "../common/activations.h"
#include "../common/cuda_storage.cuh"
#include "mlp_cuda.h"

namespace fastnn {
namespace {

using namespace cuda_detail;

constexpr int kWarps = 8;
constexpr int kRows = 16 * kWarps;
constexpr int kThreads = 32 * kWarps;

struct Chain {
  MlpCudaLayer l[kMlpFusedMaxLayers];
  int n;
};

template <int W> struct Smem {
  static constexpr int LDA = W + 8;  // 16-bit elements per row of activation / weight tiles
  static constexpr int LDS = W + 4;  // floats per row of a staging tile
  static constexpr size_t act_bytes = size_t(kRows) * LDA * 2;
  static constexpr size_t wts_bytes = size_t(W) * LDA * 2;
  static constexpr size_t stage_bytes = size_t(kWarps) * 16 * LDS * 4;
  static constexpr size_t vec_bytes = size_t(W) * 4;            // bias
  static constexpr size_t sums_bytes = size_t(kWarps) * W * 4;  // per-warp column sums
  static constexpr size_t total = act_bytes + wts_bytes + stage_bytes + vec_bytes + sums_bytes;
};

__host__ __device__ constexpr int pad16(int x) { return (x + 15) / 16 * 16; }

// A block's view of its shared memory and rows (both directions): the rows' activations (forward)
// or gradients (backward), one layer's weights, the per-warp fp32 staging tiles, the bias and the
// per-warp column sums; this warp's 16 rows and staging tile.
template <class T, int W> struct Tile {
  T* rows;
  T* wts;
  float* stage;
  float* vec;
  float* sums;
  int warp, lane;
  int64_t row0;
  int rows_valid;
  T* my_rows;
  float* my_stage;

  __device__ Tile(unsigned char* smem, int64_t M) {
    using SM = Smem<W>;
    rows = reinterpret_cast<T*>(smem);
    wts = reinterpret_cast<T*>(smem + SM::act_bytes);
    stage = reinterpret_cast<float*>(smem + SM::act_bytes + SM::wts_bytes);
    vec = reinterpret_cast<float*>(smem + SM::act_bytes + SM::wts_bytes + SM::stage_bytes);
    sums = reinterpret_cast<float*>(smem + SM::act_bytes + SM::wts_bytes + SM::stage_bytes + SM::vec_bytes);
    warp = threadIdx.x / 32;
    lane = threadIdx.x % 32;
    row0 = int64_t(blockIdx.x) * kRows;
    rows_valid = M - row0 < kRows ? int(M - row0) : kRows;
    my_rows = rows + warp * 16 * SM::LDA;
    my_stage = stage + warp * 16 * SM::LDS;
  }
};

// rows x cols (row-major, leading dimension src_ld) -> smem tile [rows_pad][LDA], zero outside
// the valid rows / cols.
template <class T, int LDA>
__device__ void load_tile(T* dst, const T* src, int64_t src_ld, int rows_valid, int rows_pad, int cols,
                          int cols_pad) {
  const bool vec = cols % 8 == 0 && src_ld % 8 == 0 && (reinterpret_cast<uintptr_t>(src) % 16) == 0;
  if (vec) {
    const int g = cols_pad / 8;
    for (int i = threadIdx.x; i < rows_pad * g; i += kThreads) {
      const int r = i / g, c = (i % g) * 8;
      Vec<T> v;
      if (r < rows_valid && c < cols) {
        v = load_vec(src + int64_t(r) * src_ld + c);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) v.e[e] = st<T>(0.f);
      }
      store_vec(dst + r * LDA + c, v);
    }
  } else {
    for (int i = threadIdx.x; i < rows_pad * cols_pad; i += kThreads) {
      const int r = i / cols_pad, c = i % cols_pad;
      dst[r * LDA + c] = (r < rows_valid && c < cols) ? src[int64_t(r) * src_ld + c] : st<T>(0.f);
    }
  }
}

// Store 8 values of row `row` at column c of a [*, cols] matrix (vector store when whole).
template <class T>
__device__ __forceinline__ void store8(T* base, int64_t row, int cols, int c, const Vec<T>& v, bool vec_ok) {
  if (c >= cols) return;
  T* p = base + row * cols + c;
  if (vec_ok && c + 8 <= cols) {
    store_vec(p, v);
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e)
      if (c + e < cols) p[e] = v.e[e];
  }
}

template <class T>
__device__ __forceinline__ Vec<T> load8(const T* base, int64_t row, int cols, int c, bool vec_ok) {
  Vec<T> v;
  const T* p = base + row * cols + c;
  if (vec_ok && c + 8 <= cols) {
    v = load_vec(p);
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) v.e[e] = c + e < cols ? p[e] : st<T>(0.f);
  }
  return v;
}

// acc[n] = A (16 x K, row-major in smem) @ B (K x N); B is W^T (col-major view of W [N][K]) in the
// forward, W itself (row-major [K][N]) in the backward. Results to the warp's staging tile.
template <class T, int W, class BLayout>
__device__ __forceinline__ void warp_gemm(const T* a, const T* wts, float* stage, int kdim, int ndim) {
  using namespace nvcuda;
  constexpr int LDA = Smem<W>::LDA, LDS = Smem<W>::LDS, NT = W / 16;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[NT];
#pragma unroll
  for (int n = 0; n < NT; ++n) wmma::fill_fragment(acc[n], 0.f);
  for (int k = 0; k < kdim; k += 16) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
    wmma::load_matrix_sync(fa, a + k, LDA);
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      if (n * 16 < ndim) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, BLayout> fb;
        if constexpr (std::is_same_v<BLayout, wmma::col_major>)
          wmma::load_matrix_sync(fb, wts + n * 16 * LDA + k, LDA);  // B(k, n) = W[n][k]
        else
          wmma::load_matrix_sync(fb, wts + k * LDA + n * 16, LDA);  // B(k, n) = W[k][n]
        wmma::mma_sync(acc[n], fa, fb, acc[n]);
      }
    }
  }
#pragma unroll
  for (int n = 0; n < NT; ++n)
    if (n * 16 < ndim) wmma::store_matrix_sync(stage + n * 16, acc[n], LDS, wmma::mem_row_major);
}

template <class T, int W>
__global__ void __launch_bounds__(kThreads) mlp_forward_kernel(const __grid_constant__ Chain ch, const T* __restrict__ x,
                                                               T* __restrict__ out, int64_t M) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  constexpr int LDA = Smem<W>::LDA, LDS = Smem<W>::LDS;
  extern __shared__ __align__(16) unsigned char smem[];
  const Tile<T, W> t(smem, M);
  T* act = t.rows;
  T* wts = t.wts;
  float* bias = t.vec;
  const int warp = t.warp, lane = t.lane;
  const int64_t row0 = t.row0;
  const int rows_valid = t.rows_valid;
  T* my_act = t.my_rows;
  float* stage = t.my_stage;

  load_tile<T, LDA>(act, x + row0 * ch.l[0].in, ch.l[0].in, rows_valid, kRows, ch.l[0].in, pad16(ch.l[0].in));
  for (int l = 0; l < ch.n; ++l) {
    const MlpCudaLayer& L = ch.l[l];
    const int kp = pad16(L.in), np = pad16(L.out);
    const bool last = l + 1 == ch.n;
    __syncthreads();  // every warp is done with the previous layer's weights
    load_tile<T, LDA>(wts, static_cast<const T*>(L.w), L.in, L.out, np, L.in, kp);
    for (int c = threadIdx.x; c < np; c += kThreads)
      bias[c] = (L.b && c < L.out) ? ld(static_cast<const T*>(L.b)[c]) : 0.f;
    __syncthreads();
    warp_gemm<T, W, nvcuda::wmma::col_major>(my_act, wts, stage, kp, np);
    __syncwarp();
    T* saved = static_cast<T*>(L.saved);
    const bool save_vec = saved && aligned16(saved) && L.out % 8 == 0;
    const bool out_vec = aligned16(out) && L.out % 8 == 0;
    const float slope = L.slope;
    dispatch_act(Act(L.act), [&](auto tag) {
      constexpr Act A = decltype(tag)::value;
      const int groups = np / 8;
      for (int i = lane; i < 16 * groups; i += 32) {
        const int r = i / groups, c = (i % groups) * 8;
        Vec<T> zv, yv;
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const float z = stage[r * LDS + c + e] + bias[c + e];
          const float y = c + e < L.out ? act_value_for<A, T>(z, slope) : 0.f;
          zv.e[e] = st<T>(z);
          yv.e[e] = st<T>(y);
        }
        const int64_t row = row0 + warp * 16 + r;
        if (last) {
          if (warp * 16 + r < rows_valid) store8(out, row, L.out, c, yv, out_vec);
        } else {
          store_vec(my_act + r * LDA + c, yv);
        }
        if (saved && warp * 16 + r < rows_valid) store8(saved, row, L.out, c, L.saves_output ? yv : zv, save_vec);
      }
    });
    __syncwarp();
  }
#endif
}

template <class T, int W>
__global__ void __launch_bounds__(kThreads) mlp_backward_kernel(const __grid_constant__ Chain ch, const T* __restrict__ g,
                                                                T* __restrict__ gin, int64_t M) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  constexpr int LDA = Smem<W>::LDA, LDS = Smem<W>::LDS;
  extern __shared__ __align__(16) unsigned char smem[];
  const Tile<T, W> t(smem, M);
  T* wts = t.wts;
  float* sums = t.sums;
  const int warp = t.warp, lane = t.lane;
  const int64_t row0 = t.row0;
  const int rows_valid = t.rows_valid;
  T* my_g = t.my_rows;
  float* stage = t.my_stage;
  float* my_sums = sums + warp * W;

  // dz_l = dy * act'(saved_l) for this warp's rows: dy from `g` (last layer) or the staging tile.
  auto act_grad = [&](const MlpCudaLayer& L, const T* dy_global) {
    const int np = pad16(L.out);
    const T* saved = static_cast<const T*>(L.saved);
    T* dz = static_cast<T*>(L.dz);
    const bool vec = aligned16(saved) && aligned16(dz) && L.out % 8 == 0;
    const bool gvec = dy_global && aligned16(dy_global) && L.out % 8 == 0;
    const float slope = L.slope;
    dispatch_act(Act(L.act), [&](auto tag) {
      constexpr Act A = decltype(tag)::value;
      const int groups = np / 8;
      for (int i = lane; i < 16 * groups; i += 32) {
        const int r = i / groups, c = (i % groups) * 8;
        const int64_t row = row0 + warp * 16 + r;
        const bool valid = warp * 16 + r < rows_valid;
        Vec<T> out;
        if (valid) {
          const Vec<T> s = load8(saved, row, L.out, c, vec);
          Vec<T> gv;
          if (dy_global) gv = load8(dy_global, row, L.out, c, gvec);
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            const float dy = dy_global ? ld(gv.e[e]) : stage[r * LDS + c + e];
            out.e[e] = st<T>(c + e < L.out ? dy * ActFn<A>::grad(ld(s.e[e]), slope) : 0.f);
          }
          store8(dz, row, L.out, c, out, vec);
        } else {
#pragma unroll
          for (int e = 0; e < 8; ++e) out.e[e] = st<T>(0.f);
        }
        store_vec(my_g + r * LDA + c, out);
      }
    });
    __syncwarp();
    if (L.bias_partial)
      for (int c = lane; c < np; c += 32) {
        float s = 0.f;
        for (int r = 0; r < 16; ++r) s += ld(my_g[r * LDA + c]);
        my_sums[c] = s;
      }
  };

  act_grad(ch.l[ch.n - 1], g);
  for (int l = ch.n - 1; l >= 0; --l) {
    const MlpCudaLayer& L = ch.l[l];
    __syncthreads();  // warp sums of layer l written; previous weights no longer read
    if (L.bias_partial)
      for (int c = threadIdx.x; c < L.out; c += kThreads) {
        float s = 0.f;
        for (int w = 0; w < kWarps; ++w) s += sums[w * W + c];
        L.bias_partial[int64_t(blockIdx.x) * L.out + c] = s;
      }
    if (l == 0 && !gin) break;
    const int kp = pad16(L.in), np = pad16(L.out);
    load_tile<T, LDA>(wts, static_cast<const T*>(L.w), L.in, L.out, np, L.in, kp);
    __syncthreads();
    // dy_{l-1} = dz_l @ W_l: K = out (np), N = in (kp).
    warp_gemm<T, W, nvcuda::wmma::row_major>(my_g, wts, stage, np, kp);
    __syncwarp();
    if (l > 0) {
      act_grad(ch.l[l - 1], nullptr);
    } else {
      const bool vec = aligned16(gin) && L.in % 8 == 0;
      for (int i = lane; i < 16 * (kp / 8); i += 32) {
        const int r = i / (kp / 8), c = (i % (kp / 8)) * 8;
        if (warp * 16 + r >= rows_valid) continue;
        Vec<T> v;
#pragma unroll
        for (int e = 0; e < 8; ++e) v.e[e] = st<T>(stage[r * LDS + c + e]);
        store8(gin, row0 + warp * 16 + r, L.in, c, v, vec);
      }
    }
    __syncwarp();
  }
#endif
}

template <class F>
void dispatch_width(int max_width, F&& f) {
  if (max_width <= 16) f(std::integral_constant<int, 16>{});
  else if (max_width <= 32) f(std::integral_constant<int, 32>{});
  else if (max_width <= 64) f(std::integral_constant<int, 64>{});
  else f(std::integral_constant<int, 128>{});
}

template <class F>
void dispatch_half(int dtype, F&& f) {
  if (CudaDType(dtype) == CudaDType::F16) f(__half{});
  else f(__nv_bfloat16{});
}

Chain make_chain(const MlpCudaLayer* layers, int L) {
  Chain c;
  c.n = L;
  for (int i = 0; i < L; ++i) c.l[i] = layers[i];
  return c;
}

template <class K>
void allow_smem(K kernel, size_t bytes) {
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
}

}  // namespace

int64_t cuda_mlp_fused_blocks(int64_t M, int) { return (M + kRows - 1) / kRows; }

namespace {

// Either direction: the (dtype, width) instance over ceil(M / kRows) blocks; both kernels take
// (chain, the tile's source, its destination, M).
void launch(bool backward, int dtype, const void* src, void* dst, const MlpCudaLayer* layers, int L, int64_t M,
            int max_width, void* stream) {
  if (M == 0) return;
  const Chain ch = make_chain(layers, L);
  dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    dispatch_width(max_width, [&](auto w) {
      constexpr int W = decltype(w)::value;
      auto kernel = backward ? mlp_backward_kernel<T, W> : mlp_forward_kernel<T, W>;
      allow_smem(kernel, Smem<W>::total);
      kernel<<<unsigned(cuda_mlp_fused_blocks(M, W)), kThreads, Smem<W>::total, static_cast<cudaStream_t>(stream)>>>(
          ch, static_cast<const T*>(src), static_cast<T*>(dst), M);
    });
  });
}

}  // namespace

void cuda_mlp_fused_forward(int dtype, const void* x, void* out, const MlpCudaLayer* layers, int L, int64_t M,
                            int max_width, void* stream) {
  launch(false, dtype, x, out, layers, L, M, max_width, stream);
}

void cuda_mlp_fused_backward(int dtype, const void* g, void* gin, const MlpCudaLayer* layers, int L, int64_t M,
                             int max_width, void* stream) {
  launch(true, dtype, g, gin, layers, L, M, max_width, stream);
}

}  // namespace fastnn
