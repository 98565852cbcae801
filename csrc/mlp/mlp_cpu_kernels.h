// Cache-blocked CPU kernels of fastnn::mlp for narrow layers, compiled once per instruction set
// (csrc/cpu_isa/). A tile of kTileRows rows goes through every layer while its activations sit in
// L1/L2: forward computes each layer's GEMM, bias and activation on the tile and writes only what
// backward needs; backward walks the layers back on the same tile, accumulating weight and bias
// gradients into per-chunk buffers that are added in chunk order at the end (deterministic: chunks
// are fixed by the shape, never by the thread count). The GEMMs are one register-blocked kernel.
#pragma once
#include <cstdint>

#include "../common/activations.h"
#include "../common/storage.h"
#include "mlp_cpu.h"

namespace fastnn {
inline namespace FASTNN_ISA_NS {
namespace mlp_cpu {

constexpr int64_t kTileRows = 32;
constexpr int64_t kMaxChunks = 16;
// Register block: kRB rows x kNV native vectors (FASTNN_VEC_BYTES, set by the translation unit of
// each instruction set). AVX2/SSE (16 registers): 4 x 2 = 8 accumulators beside the operands.
// AVX-512 (32 registers): 8 x 2 = 16, which halves the operand loads per FMA and keeps both FMA
// pipes busy through their latency (measured on Zen 5: benchmarks/RESULTS.md).
#ifndef FASTNN_VEC_BYTES
#define FASTNN_VEC_BYTES 16
#endif
constexpr int kRB = FASTNN_VEC_BYTES >= 64 ? 8 : 4;
constexpr int kNV = 2;
// Unaligned variants (a typedef may lower alignment): loads and stores through them are movups.
typedef float vf_aligned __attribute__((vector_size(FASTNN_VEC_BYTES)));
typedef double vd_aligned __attribute__((vector_size(FASTNN_VEC_BYTES)));
typedef vf_aligned vf __attribute__((aligned(4)));
typedef vd_aligned vd __attribute__((aligned(8)));
template <class C> struct VecOf;
template <> struct VecOf<float> { typedef vf type; };
template <> struct VecOf<double> { typedef vd type; };
template <class C> using vec_t = typename VecOf<C>::type;
template <class C> constexpr int kVL = FASTNN_VEC_BYTES / sizeof(C);  // lanes
template <class C> constexpr int kCB = kNV * kVL<C>;                 // columns of a block

// Cm[RB, nc] = init + A[RB, P] @ B[P, nc] for nc <= kCB columns; init = Cm (accumulate), bias[r]
// (one value per row, broadcast) or 0. A(r, p) = A[r * ars + p * aps] (a transposed A or a weight
// read as W^T costs no copy).
// Full: nc == kCB, known at compile time (plain vector loads).
template <class C, int RB, bool Full>
FASTNN_INLINE void micro(const C* __restrict A, int64_t ars, int64_t aps, const C* __restrict B, int64_t ldb,
                         C* __restrict Cm, int64_t ldc, int64_t P, int64_t nc, const C* __restrict bias,
                         bool accumulate) {
  using V = vec_t<C>;
  constexpr int VL = kVL<C>;
  auto load = [&](const C* p, int v) {
    if (Full) return *reinterpret_cast<const V*>(p + v * VL);
    V x = {};
    for (int e = 0; e < VL; ++e)
      if (v * VL + e < nc) x[e] = p[v * VL + e];
    return x;
  };
  V acc[RB][kNV];
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < kNV; ++v) acc[r][v] = accumulate ? load(Cm + r * ldc, v) : (bias ? bias[r] : C(0)) + V{};
  for (int64_t p = 0; p < P; ++p) {
    V b[kNV];
#pragma GCC unroll 8
    for (int v = 0; v < kNV; ++v) b[v] = load(B + p * ldb, v);
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) {
      const C a = A[r * ars + p * aps];
#pragma GCC unroll 8
      for (int v = 0; v < kNV; ++v) acc[r][v] += a * b[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < kNV; ++v) {
      if (Full) {
        *reinterpret_cast<V*>(Cm + r * ldc + v * VL) = acc[r][v];
      } else {
        for (int e = 0; e < VL; ++e)
          if (v * VL + e < nc) Cm[r * ldc + v * VL + e] = acc[r][v][e];
      }
    }
}

template <class C, int RB>
FASTNN_INLINE void row_block(const C* A, int64_t ars, int64_t aps, const C* B, int64_t ldb, C* Cm, int64_t ldc,
                             int64_t N, int64_t P, const C* bias, bool accumulate) {
  constexpr int CB = kCB<C>;
  int64_t j = 0;
  for (; j + CB <= N; j += CB)
    micro<C, RB, true>(A, ars, aps, B + j, ldb, Cm + j, ldc, P, CB, bias, accumulate);
  if (j < N) micro<C, RB, false>(A, ars, aps, B + j, ldb, Cm + j, ldc, P, N - j, bias, accumulate);
}

// Cm[M, N] = init + A[M, P] @ B[P, N], A(i, p) = A[i * ars + p * aps]; init: Cm when accumulate,
// else bias[i] along row i, or 0.
template <class C>
void gemm(const C* A, int64_t ars, int64_t aps, const C* B, int64_t ldb, C* Cm, int64_t ldc, int64_t M, int64_t N,
          int64_t P, const C* bias, bool accumulate) {
  int64_t i = 0;
  for (; i + kRB <= M; i += kRB)
    row_block<C, kRB>(A + i * ars, ars, aps, B, ldb, Cm + i * ldc, ldc, N, P, bias ? bias + i : nullptr, accumulate);
  if constexpr (kRB > 4)
    for (; i + 4 <= M; i += 4)
      row_block<C, 4>(A + i * ars, ars, aps, B, ldb, Cm + i * ldc, ldc, N, P, bias ? bias + i : nullptr, accumulate);
  for (; i < M; ++i)
    row_block<C, 1>(A + i * ars, ars, aps, B, ldb, Cm + i * ldc, ldc, N, P, bias ? bias + i : nullptr, accumulate);
}

template <Act A, class C>
void act_inplace(C* v, int64_t n, C slope) {
  for (int64_t e = 0; e < n; ++e) v[e] = ActFn<A>::value(v[e], slope);
}

template <class C>
void act_inplace_any(int act, C* v, int64_t n, double slope) {
  if (Act(act) == Act::Identity) return;
  dispatch_act(Act(act), [&](auto a) { act_inplace<decltype(a)::value>(v, n, (C)slope); });
}

// g[e] *= act'(s[e]) for the layer's saved tensor s.
template <Act A, class C>
void times_grad(C* __restrict g, const C* __restrict s, int64_t n, C slope) {
  for (int64_t e = 0; e < n; ++e) g[e] *= ActFn<A>::grad(s[e], slope);
}

template <class T, class C>
void load_rows(C* __restrict dst, const T* __restrict src, int64_t n) {
  for (int64_t e = 0; e < n; ++e) dst[e] = load(src[e]);
}

template <class T, class C>
void store_rows(T* __restrict dst, const C* __restrict src, int64_t n) {
  for (int64_t e = 0; e < n; ++e) dst[e] = store_as<T>(src[e]);
}

struct Chunks {
  int64_t rows, count;
};

inline Chunks chunks_of(int64_t M) {
  const int64_t tiles = (M + kTileRows - 1) / kTileRows;
  const int64_t per = (tiles + kMaxChunks - 1) / kMaxChunks;  // tiles per chunk
  const int64_t rows = imax(per, 1) * kTileRows;
  return {rows, (M + rows - 1) / rows};
}

// Tiles are held transposed, features x rows (vectors run along the rows of the batch), so every
// GEMM reads the weights as they are: forward zT = W @ xT, backward gT_prev = W^T @ gzT and
// gw += gzT @ x. Saved blocks in the arena use the same layout (tile t of layer l: an N x rows
// matrix at offset t0 * N); the output, which the caller sees, is row-major.

// Block transposes by vector shuffles (8x8 float, 4x4 double; 32-byte vectors, split by the compiler
// where the ISA has narrower ones): a scalar transpose costs a strided load and a store per
// element, which at these tile sizes took as long as the GEMMs of the small layers.
template <class C> struct TBlock;
template <> struct TBlock<float> {
  static constexpr int n = 8;
  typedef float v __attribute__((vector_size(32)));
  typedef int m __attribute__((vector_size(32)));
  static FASTNN_INLINE void run(v* r) {
    v t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
      t[i] = __builtin_shuffle(r[i], r[i + 1], m{0, 8, 1, 9, 4, 12, 5, 13});
      t[i + 1] = __builtin_shuffle(r[i], r[i + 1], m{2, 10, 3, 11, 6, 14, 7, 15});
    }
    for (int i = 0; i < 8; i += 4) {
      u[i] = __builtin_shuffle(t[i], t[i + 2], m{0, 1, 8, 9, 4, 5, 12, 13});
      u[i + 1] = __builtin_shuffle(t[i], t[i + 2], m{2, 3, 10, 11, 6, 7, 14, 15});
      u[i + 2] = __builtin_shuffle(t[i + 1], t[i + 3], m{0, 1, 8, 9, 4, 5, 12, 13});
      u[i + 3] = __builtin_shuffle(t[i + 1], t[i + 3], m{2, 3, 10, 11, 6, 7, 14, 15});
    }
    for (int j = 0; j < 4; ++j) {
      r[j] = __builtin_shuffle(u[j], u[j + 4], m{0, 1, 2, 3, 8, 9, 10, 11});
      r[j + 4] = __builtin_shuffle(u[j], u[j + 4], m{4, 5, 6, 7, 12, 13, 14, 15});
    }
  }
};
template <> struct TBlock<double> {
  static constexpr int n = 4;
  typedef double v __attribute__((vector_size(32)));
  typedef long long m __attribute__((vector_size(32)));
  static FASTNN_INLINE void run(v* r) {
    const v t0 = __builtin_shuffle(r[0], r[1], m{0, 4, 2, 6}), t1 = __builtin_shuffle(r[0], r[1], m{1, 5, 3, 7});
    const v t2 = __builtin_shuffle(r[2], r[3], m{0, 4, 2, 6}), t3 = __builtin_shuffle(r[2], r[3], m{1, 5, 3, 7});
    r[0] = __builtin_shuffle(t0, t2, m{0, 1, 4, 5});
    r[1] = __builtin_shuffle(t1, t3, m{0, 1, 4, 5});
    r[2] = __builtin_shuffle(t0, t2, m{2, 3, 6, 7});
    r[3] = __builtin_shuffle(t1, t3, m{2, 3, 6, 7});
  }
};

// dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols, converting S -> D (through the
// compute type C of both).
template <class C, class S, class D>
void transpose(D* __restrict dst, int64_t ldd, const S* __restrict src, int64_t lds, int64_t rows, int64_t cols) {
  using B = TBlock<C>;
  constexpr int n = B::n;
  int64_t r0 = 0;
  for (; r0 + n <= rows; r0 += n) {
    int64_t c0 = 0;
    for (; c0 + n <= cols; c0 += n) {
      typename B::v blk[n];
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) blk[i][j] = load(src[(r0 + i) * lds + c0 + j]);
      B::run(blk);
      for (int j = 0; j < n; ++j)
        for (int i = 0; i < n; ++i) dst[(c0 + j) * ldd + r0 + i] = store_as<D>(blk[j][i]);
    }
    for (int64_t r = r0; r < r0 + n; ++r)
      for (int64_t c = c0; c < cols; ++c) dst[c * ldd + r] = store_as<D>(load(src[r * lds + c]));
  }
  for (int64_t r = r0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * ldd + r] = store_as<D>(load(src[r * lds + c]));
}

// A row-major rows x cols block of the caller's into a tile (features x rows), and back.
template <class T, class C>
void load_transposed(C* __restrict dst, const T* __restrict src, int64_t rows, int64_t cols) {
  transpose<C>(dst, rows, src, cols, rows, cols);
}

template <class T, class C>
void store_transposed(T* __restrict dst, const C* __restrict src, int64_t rows, int64_t cols) {
  transpose<C>(dst, cols, src, rows, cols, rows);
}

template <class A, class B> constexpr bool kSame = false;
template <class A> constexpr bool kSame<A, A> = true;

// Weights and biases in the compute type: the tensors themselves for float/double, converted
// copies for bfloat16.
template <class T, class C>
struct Params {
  Scratch<const C*> w, b;
  Params(const MlpCpuLayer* layers, int L) : w(L), b(L) {
    const int64_t n_store = kSame<T, C> ? 0 : elems(layers, L);
    ThreadWorkspace store(ThreadWorkspace::rounded(n_store * int64_t(sizeof(C))), 1);
    C* s = store.take<C>(n_store);
    for (int l = 0; l < L; ++l) {
      const int64_t n = layers[l].N * layers[l].K;
      if constexpr (kSame<T, C>) {
        w[l] = (const C*)layers[l].w;
        b[l] = (const C*)layers[l].b;
      } else {
        load_rows(s, (const T*)layers[l].w, n);
        w[l] = s;
        s += n;
        b[l] = nullptr;
        if (layers[l].b) {
          load_rows(s, (const T*)layers[l].b, layers[l].N);
          b[l] = s;
          s += layers[l].N;
        }
      }
    }
  }
  static int64_t elems(const MlpCpuLayer* layers, int L) {
    int64_t n = 0;
    for (int l = 0; l < L; ++l) n += layers[l].N * (layers[l].K + 1);
    return n;
  }
};

inline int64_t max_width(const MlpCpuLayer* layers, int L) {
  int64_t m = layers[0].K;
  for (int l = 0; l < L; ++l) m = imax(m, layers[l].N);
  return m;
}

inline bool worth_threads(const MlpCpuLayer* layers, int L, int64_t M) {
  int64_t macs = 0;
  for (int l = 0; l < L; ++l) macs += layers[l].N * layers[l].K;
  return M * macs >= (int64_t(1) << 18);
}

// Bias gradients: lanes[f * kVL + v] += the elements v, v + kVL, ... of feature f's row of the tile
// (vertical vector adds; a scalar running sum per feature would be a chain of dependent adds).
// The lanes are added in order at the end: a fixed order for a given M.
template <class C>
void bias_lanes(C* __restrict lanes, const C* __restrict g, int64_t N, int64_t rows) {
  using V = vec_t<C>;
  constexpr int VL = kVL<C>;
  for (int64_t f = 0; f < N; ++f) {
    const C* gf = g + f * rows;
    C* lf = lanes + f * VL;
    V acc = *reinterpret_cast<const V*>(lf);
    int64_t i = 0;
    for (; i + VL <= rows; i += VL) acc += *reinterpret_cast<const V*>(gf + i);
    *reinterpret_cast<V*>(lf) = acc;
    for (int v = 0; i < rows; ++i, ++v) lf[v] += gf[i];
  }
}

template <class C>
int64_t partial_elems(const MlpCpuLayer* layers, int L) {
  int64_t n = 0;
  for (int l = 0; l < L; ++l) n += layers[l].N * (layers[l].K + kVL<C>);
  return n;
}

// Whether layer l's saved block is the caller's row-major output (else a transposed arena block).
inline bool saved_is_output(const MlpCpuLayer* layers, int L, int l) { return l == L - 1 && layers[l].saves_output; }

// The weight and bias gradients from the per-chunk partials ([gw | gb lanes] per layer, part elements
// per chunk), added in chunk order and the lanes in order: the same bits for any thread count.
template <class T, class C>
void reduce_partials(C* partial, int64_t part, int64_t chunks, const MlpCpuLayer* layers, int L, T* const* gw,
                     T* const* gb) {
  for (int64_t c = 1; c < chunks; ++c)
    for (int64_t e = 0; e < part; ++e) partial[e] += partial[c * part + e];
  int64_t off = 0;
  for (int l = 0; l < L; ++l) {
    const int64_t K = layers[l].K, N = layers[l].N;
    const C* p = partial + off;
    for (int64_t e = 0; e < N * K; ++e) gw[l][e] = store_as<T>(chunks ? p[e] : C(0));
    if (gb[l])
      for (int64_t f = 0; f < N; ++f) {
        C sum = 0;
        for (int v = 0; v < kVL<C>; ++v) sum += chunks ? p[N * K + f * kVL<C> + v] : C(0);
        gb[l][f] = store_as<T>(sum);
      }
    off += N * (K + kVL<C>);
  }
}

template <class T>
void forward(const T* x, T* out, const MlpCpuLayer* layers, int L, int64_t M) {
  using C = compute_t<T>;
  Params<T, C> prm(layers, L);
  const int64_t W = max_width(layers, L);
  const Chunks ch = chunks_of(M);
#pragma omp parallel if (ch.count > 1 && worth_threads(layers, L, M))
  {
    Scratch<C> buf(2 * kTileRows * W, false);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < ch.count; ++c) {
      for (int64_t t0 = c * ch.rows; t0 < imin(M, (c + 1) * ch.rows); t0 += kTileRows) {
        const int64_t rows = imin(kTileRows, M - t0);
        C* cur = buf.data();
        C* next = cur + kTileRows * W;
        load_transposed(cur, x + t0 * layers[0].K, rows, layers[0].K);
        for (int l = 0; l < L; ++l) {
          const MlpCpuLayer& ly = layers[l];
          const int64_t n = rows * ly.N;
          gemm(prm.w[l], ly.K, 1, cur, rows, next, rows, ly.N, rows, ly.K, prm.b[l], false);  // zT = W xT + b
          T* saved = ly.saved ? (T*)ly.saved + t0 * ly.N : nullptr;  // none: an output-only call
          if (saved && !ly.saves_output) store_rows(saved, next, n);
          act_inplace_any(ly.act, next, n, ly.slope);
          if (saved && ly.saves_output && !saved_is_output(layers, L, l)) store_rows(saved, next, n);
          if (l == L - 1) store_transposed(out + t0 * ly.N, next, rows, ly.N);
          C* t = cur;
          cur = next;
          next = t;
        }
      }
    }
  }
}

template <class T>
void backward(const T* g, const T* x, const MlpCpuLayer* layers, int L, int64_t M, T* gi, T* const* gw,
              T* const* gb) {
  using C = compute_t<T>;
  Params<T, C> prm(layers, L);
  const int64_t W = max_width(layers, L);
  const Chunks ch = chunks_of(M);
  // Per chunk, per layer: [gw (N x K) | gb as kVL partial sums per feature (N x kVL)].
  const int64_t part = partial_elems<C>(layers, L);
  ThreadWorkspace ws(ThreadWorkspace::rounded(ch.count * part * int64_t(sizeof(C))));
  C* partial = ws.take<C>(ch.count * part);
  for (int64_t e = 0; e < ch.count * part; ++e) partial[e] = C(0);
#pragma omp parallel if (ch.count > 1 && worth_threads(layers, L, M))
  {
    Scratch<C> buf(4 * kTileRows * W, false);
    C* gcur = buf.data();                // gzT of the layer (features x rows)
    C* gnext = gcur + kTileRows * W;     // the gradient passed down (transposed)
    C* xin = gnext + kTileRows * W;      // the layer's input, row-major (rows x K)
    C* st = xin + kTileRows * W;         // a transposed saved tile, converted
#pragma omp for schedule(static)
    for (int64_t c = 0; c < ch.count; ++c) {
      for (int64_t t0 = c * ch.rows; t0 < imin(M, (c + 1) * ch.rows); t0 += kTileRows) {
        const int64_t rows = imin(kTileRows, M - t0);
        load_transposed(gcur, g + t0 * layers[L - 1].N, rows, layers[L - 1].N);
        C* pw = partial + c * part + part;  // walks back from the end of the chunk's block
        for (int l = L - 1; l >= 0; --l) {
          const MlpCpuLayer& ly = layers[l];
          const int64_t K = ly.K, N = ly.N, n = rows * N;
          pw -= N * (K + kVL<C>);
          C* pgw = pw;
          C* pgb = pw + N * K;
          if (saved_is_output(layers, L, l)) load_transposed(st, (const T*)ly.saved + t0 * N, rows, N);
          else load_rows(st, (const T*)ly.saved + t0 * N, n);
          dispatch_act(Act(ly.act), [&](auto a) { times_grad<decltype(a)::value>(gcur, st, n, (C)ly.slope); });
          bias_lanes(pgb, gcur, N, rows);
          // The layer's input on this tile, row-major: the network input, or the previous layer's
          // output (saved, or recomputed from its saved pre-activation).
          if (l == 0) {
            load_rows(xin, x + t0 * K, rows * K);
          } else {
            const MlpCpuLayer& prev = layers[l - 1];
            load_rows(st, (const T*)prev.saved + t0 * K, rows * K);
            if (!prev.saves_output) act_inplace_any(prev.act, st, rows * K, prev.slope);
            transpose<C>(xin, K, st, rows, K, rows);  // xin[i * K + k] = st[k * rows + i]
          }
          gemm(gcur, rows, 1, xin, K, pgw, K, N, K, rows, (const C*)nullptr, true);  // gw += gzT x
          if (l > 0 || gi) {
            gemm(prm.w[l], 1, K, gcur, rows, gnext, rows, K, rows, N, (const C*)nullptr, false);  // W^T gzT
            C* t = gcur;
            gcur = gnext;
            gnext = t;
          }
        }
        if (gi) store_transposed(gi + t0 * layers[0].K, gcur, rows, layers[0].K);
      }
    }
  }
  reduce_partials(partial, part, ch.count, layers, L, gw, gb);
}

}  // namespace mlp_cpu
}  // namespace FASTNN_ISA_NS
}  // namespace fastnn

#ifdef FASTNN_NATIVE_BF16
#include "mlp_cpu_bf16_kernels.h"
#endif

// The amx_bf16 translation unit builds its own entries on the bf16 kernels alone (no float32/float64
// instantiations there: those entries are the avx512_bf16 table's).
#ifndef FASTNN_MLP_BF16_ONLY
namespace fastnn {
inline namespace FASTNN_ISA_NS {
namespace mlp_cpu {

inline void forward_entry(DType d, const void* x, void* out, const MlpCpuLayer* layers, int L, int64_t M) {
#ifdef FASTNN_NATIVE_BF16
  if (d == DType::BF16) return bf16_native::forward<bf16_native::VdpMm>((const bf16_t*)x, (bf16_t*)out, layers, L, M);
#endif
  dispatch_dtype(d, [&](auto t) {
    using T = decltype(t);
    forward<T>((const T*)x, (T*)out, layers, L, M);
  });
}

inline void backward_entry(DType d, const void* g, const void* x, const MlpCpuLayer* layers, int L, int64_t M,
                           void* gi, void* const* gw, void* const* gb) {
#ifdef FASTNN_NATIVE_BF16
  if (d == DType::BF16)
    return bf16_native::backward<bf16_native::VdpMm>((const bf16_t*)g, (const bf16_t*)x, layers, L, M, (bf16_t*)gi,
                                                     (bf16_t* const*)gw, (bf16_t* const*)gb);
#endif
  dispatch_dtype(d, [&](auto t) {
    using T = decltype(t);
    backward<T>((const T*)g, (const T*)x, layers, L, M, (T*)gi, (T* const*)gw, (T* const*)gb);
  });
}

inline const MlpCpuKernels& table() {
  static const MlpCpuKernels t{forward_entry, backward_entry};
  return t;
}

}  // namespace mlp_cpu
}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
#endif  // FASTNN_MLP_BF16_ONLY
