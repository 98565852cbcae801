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
#include <cstring>
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

// ---- version 2 (issue 19): weight-stationary warps, mma.sync on the accumulator ----
// v1's profile (benchmarks/GPU_NOTES.md) showed it bound by instruction count: ~42 thread
// instructions per output element, nearly all in the fp32 staging epilogue, 2% tensor-core
// instructions. v2 works on mma.sync m16n8k16 fragments, whose layout PTX documents:
//  - a warp owns a 16-column slice of a layer's output and holds that slice of the weights in
//    registers as B fragments for the whole layer (loaded once from L2), walking the block's row
//    groups of 16 (P warps share a slice when the layer has fewer than 8 slices);
//  - A fragments come from the activation tile in shared memory by ldmatrix, rows skewed by 16 bytes
//    (8 row addresses of an ldmatrix fall in 8 different bank groups);
//  - bias seeds the accumulator; activation, rounding and a packed 32-bit store per pair of elements
//    act on the accumulator registers (no staging tile);
//  - ping-pong activation buffers: one block barrier per layer; saved blocks and outputs leave shared
//    memory by 16-byte coalesced stores after it, while the next layer computes.
// Backward: the same tile goes down the chain: dz_q = dy_q * act'(saved_q) at the fragment positions
// (saved read by the lane that needs it), dz_q to shared memory (the next step's A operand) and, after
// the barrier, coalesced to global for the weight-gradient GEMMs; bias sums from the fragments
// (shuffles over the lanes of a column, then P partials added in a fixed order). Deterministic.
namespace v2 {

template <int W> struct Smem2 {
  static constexpr int LDA = W + 8;
  static constexpr size_t buf_bytes = size_t(kRows) * LDA * 2;
  static constexpr size_t fwd = 2 * buf_bytes;
  static constexpr size_t bwd = fwd + size_t(2) * kWarps * W * 4;  // + ping-pong bias partials
};

// A layer of np (multiple of 16) columns over the 8 warps: S slices of 16 columns, P warps per slice;
// warp (s, p) takes row groups p, p + P, ... of the block's 8 groups of 16 rows.
struct Split {
  int S, P, s, p;
  bool active;
};
__device__ __forceinline__ Split split_of(int np, int warp) {
  Split r;
  r.S = np / 16;
  r.P = r.S >= kWarps ? 1 : kWarps / r.S;
  r.s = warp / r.P;
  r.p = warp % r.P;
  r.active = r.s < r.S;
  return r;
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&a)[4], const void* p) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
               : "r"(addr)
               : "memory");
}

// c += A (16x16, row) * B (16x8, col), fp32 accumulation.
template <class T> __device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                            uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// Two values rounded to T, packed as mma and memory see them (the lower column in the low half).
template <class T> __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  const T a = st<T>(lo), b = st<T>(hi);
  uint16_t ua, ub;
  memcpy(&ua, &a, 2);
  memcpy(&ub, &b, 2);
  return uint32_t(ua) | (uint32_t(ub) << 16);
}
template <class T> __device__ __forceinline__ float rounded(float v) { return ld(st<T>(v)); }

// The warp's B fragments for output columns n0..n0+15: B(k, n) = src[n * sn + k * sk], zero where
// k >= kdim or n >= ndim. b[kk][j][h]: k-step kk, 8-column tile j, register h (k + 8h), lane (g, t)
// holding k = 16 kk + 8 h + 2 t (+1), n = n0 + 8 j + g.
template <class T, int KT>
__device__ __forceinline__ void load_b(uint32_t (&b)[KT][2][2], const T* w, int64_t sn, int64_t sk, int kdim,
                                       int ndim, int n0, int lane) {
  const unsigned short* src = reinterpret_cast<const unsigned short*>(w);
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int kk = 0; kk < KT; ++kk)
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int n = n0 + 8 * j + g, k = 16 * kk + 8 * h + 2 * t;
        uint32_t lo = 0, hi = 0;
        if (n < ndim && k < kdim) lo = __ldg(src + n * sn + k * sk);
        if (n < ndim && k + 1 < kdim) hi = __ldg(src + n * sn + (k + 1) * sk);
        b[kk][j][h] = lo | (hi << 16);
      }
}

// acc[j] += rows 16 mg.. of the tile `a` (K = kp columns) times the warp's B fragments.
template <class T, int W>
__device__ __forceinline__ void warp_mma(float (&acc)[2][4], const T* a, int mg, int kp,
                                         const uint32_t (&b)[W / 16][2][2], int lane) {
  constexpr int LDA = Smem2<W>::LDA;
#pragma unroll
  for (int kk = 0; kk < W / 16; ++kk) {
    if (16 * kk < kp) {
      uint32_t f[4];
      ldmatrix_x4(f, a + (16 * mg + (lane & 15)) * LDA + 16 * kk + (lane >> 4) * 8);
      mma16816<T>(acc[0], f, b[kk][0][0], b[kk][0][1]);
      mma16816<T>(acc[1], f, b[kk][1][0], b[kk][1][1]);
    }
  }
}

// Element (row, col) and (row, col + 1) of a [*, cols] matrix as floats (zero past cols); pair: one
// 32-bit access (cols even, base 4-byte aligned).
template <class T>
__device__ __forceinline__ float2 load_pair(const T* base, int64_t row, int cols, int col, bool pair) {
  float2 v = make_float2(0.f, 0.f);
  if (col >= cols) return v;
  const T* p = base + row * cols + col;
  if (pair) {
    const uint32_t u = __ldg(reinterpret_cast<const unsigned int*>(p));
    T a, b;
    const uint16_t ua = uint16_t(u), ub = uint16_t(u >> 16);
    memcpy(&a, &ua, 2);
    memcpy(&b, &ub, 2);
    v.x = ld(a);
    v.y = ld(b);
  } else {
    v.x = ld(p[0]);
    if (col + 1 < cols) v.y = ld(p[1]);
  }
  return v;
}
template <class T>
__device__ __forceinline__ void store_pair(T* base, int64_t row, int cols, int col, float v0, float v1, bool pair) {
  if (col >= cols) return;
  T* p = base + row * cols + col;
  if (pair) {
    *reinterpret_cast<uint32_t*>(p) = pack2<T>(v0, v1);
  } else {
    p[0] = st<T>(v0);
    if (col + 1 < cols) p[1] = st<T>(v1);
  }
}

// The block's rows of a shared tile (row stride LDA) to a [M, cols] matrix: 16-byte stores when rows
// start 16-byte aligned, else element by element.
template <class T, int LDA>
__device__ __forceinline__ void store_tile(T* dst, int64_t row0, int cols, const T* src, int rows_valid) {
  if (cols % 8 == 0 && aligned16(dst)) {
    const int groups = cols / 8;
    for (int i = threadIdx.x; i < rows_valid * groups; i += kThreads) {
      const int r = i / groups, c = (i % groups) * 8;
      store_vec(dst + (row0 + r) * cols + c, load_vec(src + r * LDA + c));
    }
  } else {
    for (int i = threadIdx.x; i < rows_valid * cols; i += kThreads) {
      const int r = i / cols, c = i % cols;
      dst[(row0 + r) * cols + c] = src[r * LDA + c];
    }
  }
}

// A block's two activation buffers, its lane's place in the mma fragments ((g, t): row g and
// columns 2t, 2t + 1 of each 8-column tile) and its rows of the batch.
template <class T, int W> struct Block2 {
  T* cur;
  T* nxt;
  int warp, lane, g, t, rows_valid;
  int64_t row0;
  __device__ Block2(unsigned char* smem, int64_t M) {
    cur = reinterpret_cast<T*>(smem);
    nxt = cur + kRows * Smem2<W>::LDA;
    warp = threadIdx.x / 32;
    lane = threadIdx.x % 32;
    g = lane >> 2;
    t = lane & 3;
    row0 = int64_t(blockIdx.x) * kRows;
    rows_valid = M - row0 < kRows ? int(M - row0) : kRows;
  }
};

template <class T, int W>
__global__ void __launch_bounds__(kThreads) mlp_forward_kernel(const __grid_constant__ Chain ch, const T* __restrict__ x,
                                                               T* __restrict__ out, int64_t M) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  constexpr int LDA = Smem2<W>::LDA, KT = W / 16;
  extern __shared__ __align__(16) unsigned char smem[];
  // Plain locals, not a structured binding: the lambdas below capture them (C++17).
  const Block2<T, W> k(smem, M);
  T *cur = k.cur, *nxt = k.nxt;
  const int warp = k.warp, lane = k.lane, g = k.g, t = k.t, rows_valid = k.rows_valid;
  const int64_t row0 = k.row0;
  load_tile<T, LDA>(cur, x + row0 * ch.l[0].in, ch.l[0].in, rows_valid, kRows, ch.l[0].in, pad16(ch.l[0].in));
  __syncthreads();
  for (int l = 0; l < ch.n; ++l) {
    const MlpCudaLayer& L = ch.l[l];
    const int kp = pad16(L.in), np = pad16(L.out), out_w = L.out;
    const Split sp = split_of(np, warp);
    T* saved = static_cast<T*>(L.saved);
    T* z_saved = saved && !L.saves_output ? saved : nullptr;  // pre-activations go from the fragments
    const bool z_pair = z_saved && out_w % 2 == 0 && aligned_to(z_saved, 4);
    if (sp.active) {
      const int n0 = 16 * sp.s;
      uint32_t b[KT][2][2];
      load_b<T, KT>(b, static_cast<const T*>(L.w), L.in, 1, L.in, out_w, n0, lane);
      float bias[2][2];
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int c = n0 + 8 * j + 2 * t + h;
          bias[j][h] = (L.b && c < out_w) ? ld(static_cast<const T*>(L.b)[c]) : 0.f;
        }
      const float slope = L.slope;
      dispatch_act(Act(L.act), [&](auto tag) {
        constexpr Act A = decltype(tag)::value;
        for (int mg = sp.p; mg < kRows / 16; mg += sp.P) {
          float acc[2][4];
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            acc[j][0] = acc[j][2] = bias[j][0];
            acc[j][1] = acc[j][3] = bias[j][1];
          }
          warp_mma<T, W>(acc, cur, mg, kp, b, lane);
#pragma unroll
          for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int hr = 0; hr < 2; ++hr) {
              const int r = 16 * mg + g + 8 * hr, c = n0 + 8 * j + 2 * t;
              const float z0 = acc[j][2 * hr], z1 = acc[j][2 * hr + 1];
              const float y0 = c < out_w ? act_value_for<A, T>(z0, slope) : 0.f;
              const float y1 = c + 1 < out_w ? act_value_for<A, T>(z1, slope) : 0.f;
              *reinterpret_cast<uint32_t*>(nxt + r * LDA + c) = pack2<T>(y0, y1);
              if (z_saved && r < rows_valid) store_pair<T>(z_saved, row0 + r, out_w, c, z0, z1, z_pair);
            }
        }
      });
    }
    __syncthreads();  // the layer's outputs are in nxt; nobody reads cur any more
    if (l + 1 == ch.n) store_tile<T, LDA>(out, row0, out_w, nxt, rows_valid);
    else if (saved && L.saves_output) store_tile<T, LDA>(saved, row0, out_w, nxt, rows_valid);
    T* tmp = cur;
    cur = nxt;
    nxt = tmp;
  }
#endif
}

template <class T, int W>
__global__ void __launch_bounds__(kThreads) mlp_backward_kernel(const __grid_constant__ Chain ch, const T* __restrict__ gout,
                                                                T* __restrict__ gin, int64_t M) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  constexpr int LDA = Smem2<W>::LDA, KT = W / 16;
  extern __shared__ __align__(16) unsigned char smem[];
  // Plain locals, not a structured binding: the lambdas below capture them (C++17).
  const Block2<T, W> k(smem, M);
  T *cur = k.cur, *nxt = k.nxt;
  const int warp = k.warp, lane = k.lane, g = k.g, t = k.t, rows_valid = k.rows_valid;
  const int64_t row0 = k.row0;
  float* sums = reinterpret_cast<float*>(smem + Smem2<W>::fwd);  // [2][kWarps][W]
  const bool gout_pair = ch.l[ch.n - 1].out % 2 == 0 && aligned_to(gout, 4);
  // Step q: dz_q = dy_q * act'(saved_q), dy_q from the incoming gradient (top layer) or dz_{q+1} @ W_{q+1}.
  for (int q = ch.n - 1; q >= 0; --q) {
    const MlpCudaLayer& L = ch.l[q];
    const bool top = q + 1 == ch.n;
    const int np = pad16(L.out), out_w = L.out;
    const Split sp = split_of(np, warp);
    const T* saved = static_cast<const T*>(L.saved);
    const bool s_pair = out_w % 2 == 0 && aligned_to(saved, 4);
    float* qsums = sums + (q & 1) * kWarps * W;
    if (sp.active) {
      const int n0 = 16 * sp.s;
      uint32_t b[KT][2][2];
      int kpu = 0;
      if (!top) {  // B(k, n) = W_{q+1}[k][n]: k over its outputs, n over its inputs (= this layer's outputs)
        const MlpCudaLayer& U = ch.l[q + 1];
        load_b<T, KT>(b, static_cast<const T*>(U.w), 1, U.in, U.out, U.in, n0, lane);
        kpu = pad16(U.out);
      }
      float colsum[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
      const float slope = L.slope;
      dispatch_act(Act(L.act), [&](auto tag) {
        constexpr Act A = decltype(tag)::value;
        for (int mg = sp.p; mg < kRows / 16; mg += sp.P) {
          float s[2][4], dy[2][4];
#pragma unroll
          for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int hr = 0; hr < 2; ++hr) {
              const int r = 16 * mg + g + 8 * hr, c = n0 + 8 * j + 2 * t;
              const bool valid = r < rows_valid;
              const float2 sv = valid ? load_pair<T>(saved, row0 + r, out_w, c, s_pair) : make_float2(0.f, 0.f);
              s[j][2 * hr] = sv.x;
              s[j][2 * hr + 1] = sv.y;
              const float2 gv = (top && valid) ? load_pair<T>(gout, row0 + r, out_w, c, gout_pair) : make_float2(0.f, 0.f);
              dy[j][2 * hr] = gv.x;
              dy[j][2 * hr + 1] = gv.y;
            }
          if (!top) warp_mma<T, W>(dy, cur, mg, kpu, b, lane);
#pragma unroll
          for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int hr = 0; hr < 2; ++hr) {
              const int r = 16 * mg + g + 8 * hr, c = n0 + 8 * j + 2 * t;
              const bool valid = r < rows_valid;
              const float d0 = valid && c < out_w ? rounded<T>(dy[j][2 * hr] * ActFn<A>::grad(s[j][2 * hr], slope)) : 0.f;
              const float d1 =
                  valid && c + 1 < out_w ? rounded<T>(dy[j][2 * hr + 1] * ActFn<A>::grad(s[j][2 * hr + 1], slope)) : 0.f;
              *reinterpret_cast<uint32_t*>(nxt + r * LDA + c) = pack2<T>(d0, d1);
              colsum[j][0] += d0;
              colsum[j][1] += d1;
            }
        }
      });
      // Column sums over the warp's rows: the 8 lanes of a column (g = 0..7), a fixed tree.
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float v = colsum[j][h];
          v += __shfl_xor_sync(0xffffffffu, v, 4);
          v += __shfl_xor_sync(0xffffffffu, v, 8);
          v += __shfl_xor_sync(0xffffffffu, v, 16);
          if (g == 0) qsums[sp.p * W + n0 + 8 * j + 2 * t + h] = v;
        }
    }
    __syncthreads();  // dz_q complete in nxt, its partial sums in qsums
    store_tile<T, LDA>(static_cast<T*>(L.dz), row0, out_w, nxt, rows_valid);
    if (L.bias_partial) {
      const int P = split_of(np, 0).P;
      for (int c = threadIdx.x; c < out_w; c += kThreads) {
        float v = 0.f;
        for (int p = 0; p < P; ++p) v += qsums[p * W + c];
        L.bias_partial[int64_t(blockIdx.x) * out_w + c] = v;
      }
    }
    T* tmp = cur;
    cur = nxt;
    nxt = tmp;
  }
  if (!gin) return;
  // The input's gradient: dz_0 @ W_0.
  const MlpCudaLayer& L0 = ch.l[0];
  const Split sp = split_of(pad16(L0.in), warp);
  if (sp.active) {
    const int n0 = 16 * sp.s;
    uint32_t b[KT][2][2];
    load_b<T, KT>(b, static_cast<const T*>(L0.w), 1, L0.in, L0.out, L0.in, n0, lane);
    for (int mg = sp.p; mg < kRows / 16; mg += sp.P) {
      float dy[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
      warp_mma<T, W>(dy, cur, mg, pad16(L0.out), b, lane);
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
          const int r = 16 * mg + g + 8 * hr, c = n0 + 8 * j + 2 * t;
          *reinterpret_cast<uint32_t*>(nxt + r * LDA + c) = pack2<T>(dy[j][2 * hr], dy[j][2 * hr + 1]);
        }
    }
  }
  __syncthreads();
  store_tile<T, LDA>(gin, row0, L0.in, nxt, rows_valid);
#endif
}

}  // namespace v2

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

// Either direction: the (version, dtype, width) instance over ceil(M / kRows) blocks; every kernel
// takes (chain, the tile's source, its destination, M).
void launch(bool backward, int version, int dtype, const void* src, void* dst, const MlpCudaLayer* layers, int L,
            int64_t M, int max_width, void* stream) {
  if (M == 0) return;
  const Chain ch = make_chain(layers, L);
  dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    dispatch_width(max_width, [&](auto w) {
      constexpr int W = decltype(w)::value;
      auto kernel = backward ? mlp_backward_kernel<T, W> : mlp_forward_kernel<T, W>;
      size_t bytes = Smem<W>::total;
      if (version == 2) {
        kernel = backward ? v2::mlp_backward_kernel<T, W> : v2::mlp_forward_kernel<T, W>;
        bytes = backward ? v2::Smem2<W>::bwd : v2::Smem2<W>::fwd;
      }
      allow_smem(kernel, bytes);
      kernel<<<unsigned(cuda_mlp_fused_blocks(M, W)), kThreads, bytes, static_cast<cudaStream_t>(stream)>>>(
          ch, static_cast<const T*>(src), static_cast<T*>(dst), M);
    });
  });
}

}  // namespace

void cuda_mlp_fused_forward(int version, int dtype, const void* x, void* out, const MlpCudaLayer* layers, int L,
                            int64_t M, int max_width, void* stream) {
  launch(false, version, dtype, x, out, layers, L, M, max_width, stream);
}

void cuda_mlp_fused_backward(int version, int dtype, const void* g, void* gin, const MlpCudaLayer* layers, int L,
                             int64_t M, int max_width, void* stream) {
  launch(true, version, dtype, g, gin, layers, L, M, max_width, stream);
}

}  // namespace fastnn
