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
constexpr int kRB = 4;  // register block: rows
template <class C> struct ColBlock { static constexpr int value = 16; };
template <> struct ColBlock<double> { static constexpr int value = 8; };

// Cm[RB, nc] = init + A[RB, P] @ B[P, nc], init = Cm (accumulate), bias (broadcast) or 0.
template <class C, int RB, bool Full>
FASTNN_INLINE void micro(const C* __restrict A, int64_t lda, const C* __restrict B, int64_t ldb, C* __restrict Cm,
                         int64_t ldc, int64_t P, int64_t nc, const C* __restrict bias, bool accumulate) {
  constexpr int CB = ColBlock<C>::value;
  C acc[RB][CB];
#pragma GCC unroll 4
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 16
    for (int c = 0; c < CB; ++c)
      acc[r][c] = (Full || c < nc) ? (accumulate ? Cm[r * ldc + c] : bias ? bias[c] : C(0)) : C(0);
  for (int64_t p = 0; p < P; ++p) {
    const C* __restrict b = B + p * ldb;
    C bv[CB];
#pragma GCC unroll 16
    for (int c = 0; c < CB; ++c) bv[c] = (Full || c < nc) ? b[c] : C(0);
#pragma GCC unroll 4
    for (int r = 0; r < RB; ++r) {
      const C a = A[r * lda + p];
#pragma GCC unroll 16
      for (int c = 0; c < CB; ++c) acc[r][c] += a * bv[c];
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 16
    for (int c = 0; c < CB; ++c)
      if (Full || c < nc) Cm[r * ldc + c] = acc[r][c];
}

template <class C, int RB>
FASTNN_INLINE void row_block(const C* A, int64_t lda, const C* B, int64_t ldb, C* Cm, int64_t ldc, int64_t N,
                             int64_t P, const C* bias, bool accumulate) {
  constexpr int CB = ColBlock<C>::value;
  int64_t j = 0;
  for (; j + CB <= N; j += CB)
    micro<C, RB, true>(A, lda, B + j, ldb, Cm + j, ldc, P, CB, bias ? bias + j : nullptr, accumulate);
  if (j < N) micro<C, RB, false>(A, lda, B + j, ldb, Cm + j, ldc, P, N - j, bias ? bias + j : nullptr, accumulate);
}

// Cm[M, N] = init + A[M, P] @ B[P, N] (init: Cm when accumulate, else bias broadcast over rows, or 0).
template <class C>
void gemm(const C* A, int64_t lda, const C* B, int64_t ldb, C* Cm, int64_t ldc, int64_t M, int64_t N, int64_t P,
          const C* bias, bool accumulate) {
  int64_t i = 0;
  for (; i + kRB <= M; i += kRB) row_block<C, kRB>(A + i * lda, lda, B, ldb, Cm + i * ldc, ldc, N, P, bias, accumulate);
  for (; i < M; ++i) row_block<C, 1>(A + i * lda, lda, B, ldb, Cm + i * ldc, ldc, N, P, bias, accumulate);
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

// g[e] *= act'(s[e]) for the layer's saved tensor s (storage type T).
template <Act A, class T, class C>
void times_grad(C* __restrict g, const T* __restrict s, int64_t n, C slope) {
  for (int64_t e = 0; e < n; ++e) g[e] *= ActFn<A>::grad(load(s[e]), slope);
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

// Weights in the compute type: w[l] as [N, K] (backward's B of gz @ W) and, transposed, [K, N]
// (forward's B of x @ W^T).
template <class T, class C>
void prepare_weights(const MlpCpuLayer* layers, int L, C** w_nk, C** w_kn, C** bias, C* store) {
  for (int l = 0; l < L; ++l) {
    const int64_t K = layers[l].K, N = layers[l].N;
    const T* w = (const T*)layers[l].w;
    if (w_nk) {
      w_nk[l] = store;
      for (int64_t e = 0; e < N * K; ++e) store[e] = load(w[e]);
      store += N * K;
    }
    if (w_kn) {
      w_kn[l] = store;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) store[k * N + n] = load(w[n * K + k]);
      store += N * K;
    }
    if (bias) {
      bias[l] = nullptr;
      if (layers[l].b) {
        bias[l] = store;
        load_rows(store, (const T*)layers[l].b, N);
        store += N;
      }
    }
  }
}

inline int64_t max_width(const MlpCpuLayer* layers, int L) {
  int64_t m = layers[0].K;
  for (int l = 0; l < L; ++l) m = imax(m, layers[l].N);
  return m;
}

inline int64_t weight_elems(const MlpCpuLayer* layers, int L) {
  int64_t n = 0;
  for (int l = 0; l < L; ++l) n += layers[l].N * (layers[l].K + 1);
  return n;
}

inline bool worth_threads(const MlpCpuLayer* layers, int L, int64_t M) {
  int64_t macs = 0;
  for (int l = 0; l < L; ++l) macs += layers[l].N * layers[l].K;
  return M * macs >= (int64_t(1) << 18);
}

template <class T>
void forward(const T* x, T* out, const MlpCpuLayer* layers, int L, int64_t M) {
  using C = compute_t<T>;
  Scratch<C*> wkn(L), bias(L);
  Scratch<C> wstore(weight_elems(layers, L));
  prepare_weights<T, C>(layers, L, nullptr, wkn.data(), bias.data(), wstore.data());
  const int64_t W = max_width(layers, L);
  const Chunks ch = chunks_of(M);
#pragma omp parallel if (ch.count > 1 && worth_threads(layers, L, M))
  {
    Scratch<C> buf(2 * kTileRows * W);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < ch.count; ++c) {
      for (int64_t t0 = c * ch.rows; t0 < imin(M, (c + 1) * ch.rows); t0 += kTileRows) {
        const int64_t rows = imin(kTileRows, M - t0);
        C* cur = buf.data();
        C* next = cur + kTileRows * W;
        load_rows(cur, x + t0 * layers[0].K, rows * layers[0].K);
        for (int l = 0; l < L; ++l) {
          const MlpCpuLayer& ly = layers[l];
          gemm(cur, ly.K, wkn[l], ly.N, next, ly.N, rows, ly.N, ly.K, bias[l], false);
          T* saved = (T*)ly.saved + t0 * ly.N;
          if (!ly.saves_output) store_rows(saved, next, rows * ly.N);
          act_inplace_any(ly.act, next, rows * ly.N, ly.slope);
          if (ly.saves_output) store_rows(saved, next, rows * ly.N);
          if (l == L - 1 && (T*)ly.saved != out) store_rows(out + t0 * ly.N, next, rows * ly.N);
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
  Scratch<C*> wnk(L);
  Scratch<C> wstore(weight_elems(layers, L));
  prepare_weights<T, C>(layers, L, wnk.data(), nullptr, nullptr, wstore.data());
  const int64_t W = max_width(layers, L);
  const Chunks ch = chunks_of(M);
  // Per chunk, per layer: [gw (N x K) | gb (N)].
  const int64_t part = weight_elems(layers, L);
  Scratch<C> partial(ch.count * part);
#pragma omp parallel if (ch.count > 1 && worth_threads(layers, L, M))
  {
    Scratch<C> buf(4 * kTileRows * W);
    C* gcur = buf.data();
    C* gnext = gcur + kTileRows * W;
    C* xin = gnext + kTileRows * W;
    C* gzt = xin + kTileRows * W;
#pragma omp for schedule(static)
    for (int64_t c = 0; c < ch.count; ++c) {
      for (int64_t t0 = c * ch.rows; t0 < imin(M, (c + 1) * ch.rows); t0 += kTileRows) {
        const int64_t rows = imin(kTileRows, M - t0);
        load_rows(gcur, g + t0 * layers[L - 1].N, rows * layers[L - 1].N);
        C* pw = partial.data() + c * part + part;  // walks back from the end of the chunk's block
        for (int l = L - 1; l >= 0; --l) {
          const MlpCpuLayer& ly = layers[l];
          const int64_t K = ly.K, N = ly.N;
          pw -= N * (K + 1);
          C* pgw = pw;
          C* pgb = pw + N * K;
          const T* s = (const T*)ly.saved + t0 * N;
          dispatch_act(Act(ly.act), [&](auto a) { times_grad<decltype(a)::value>(gcur, s, rows * N, (C)ly.slope); });
          for (int64_t i = 0; i < rows; ++i)
            for (int64_t n = 0; n < N; ++n) pgb[n] += gcur[i * N + n];
          // The layer's input on this tile: the network input, or the previous layer's output (saved,
          // or recomputed from its saved pre-activation).
          if (l == 0) {
            load_rows(xin, x + t0 * K, rows * K);
          } else {
            const MlpCpuLayer& prev = layers[l - 1];
            load_rows(xin, (const T*)prev.saved + t0 * K, rows * K);
            if (!prev.saves_output) act_inplace_any(prev.act, xin, rows * K, prev.slope);
          }
          for (int64_t i = 0; i < rows; ++i)
            for (int64_t n = 0; n < N; ++n) gzt[n * rows + i] = gcur[i * N + n];
          gemm(gzt, rows, xin, K, pgw, K, N, K, rows, (const C*)nullptr, true);
          if (l > 0 || gi) {
            gemm(gcur, N, wnk[l], K, gnext, K, rows, K, N, (const C*)nullptr, false);
            C* t = gcur;
            gcur = gnext;
            gnext = t;
          }
        }
        if (gi) store_rows(gi + t0 * layers[0].K, gcur, rows * layers[0].K);
      }
    }
  }
  // Chunk partials, added in chunk order.
  for (int64_t c = 1; c < ch.count; ++c)
    for (int64_t e = 0; e < part; ++e) partial[e] += partial[c * part + e];
  int64_t off = 0;
  for (int l = 0; l < L; ++l) {
    const int64_t K = layers[l].K, N = layers[l].N;
    const C* p = partial.data() + off;
    for (int64_t e = 0; e < N * K; ++e) gw[l][e] = store_as<T>(ch.count ? p[e] : C(0));
    if (gb[l])
      for (int64_t n = 0; n < N; ++n) gb[l][n] = store_as<T>(ch.count ? p[N * K + n] : C(0));
    off += N * (K + 1);
  }
}

inline void forward_entry(DType d, const void* x, void* out, const MlpCpuLayer* layers, int L, int64_t M) {
  dispatch_dtype(d, [&](auto t) {
    using T = decltype(t);
    forward<T>((const T*)x, (T*)out, layers, L, M);
  });
}

inline void backward_entry(DType d, const void* g, const void* x, const MlpCpuLayer* layers, int L, int64_t M,
                           void* gi, void* const* gw, void* const* gb) {
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
