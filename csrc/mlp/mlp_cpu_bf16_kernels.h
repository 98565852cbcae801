// Native bfloat16 whole-MLP kernels for CPUs with AVX512_BF16 (vdpbf16ps: pairs of bf16 products
// summed into float32 lanes), included by mlp_cpu_kernels.h in the kernel tables compiled with
// FASTNN_NATIVE_BF16 (csrc/cpu_isa/avx512_bf16.cpp). Same tiles, chunks, saved-arena layout and
// deterministic per-chunk gradient sums as the float32-compute kernels; the differences:
//  - GEMM operands are bf16, accumulation float32; each layer's output is rounded to bf16 once
//    (what the next layer reads, what is saved), as torch's autocast Linear does;
//  - bias, activation, its derivative and every gradient sum stay in float32;
//  - a tile is always 32 columns (rows of the batch) wide, zero-padded: pad columns of the gradient
//    are zero from the top layer down, so they add nothing to weight or bias gradients.
// The reduction dimension of vdpbf16ps comes in pairs: an operand "paired along p" stores, as one
// 32-bit word, the bf16 values at p = 2q and 2q + 1 (low, high half), zero-padding an odd count.
#pragma once
#include <cstdint>

namespace fastnn {
inline namespace FASTNN_ISA_NS {
namespace mlp_cpu {
namespace bf16_native {

constexpr int64_t R = kTileRows;  // columns of every transposed tile
static_assert(R == 32, "the tile is two 16-lane vectors wide");
constexpr int kLanes = 16;

FASTNN_INLINE uint32_t bits(bf16_t v) { return v.bits; }
FASTNN_INLINE uint32_t pair(uint32_t lo, uint32_t hi) { return lo | (hi << 16); }
FASTNN_INLINE uint32_t round_bits(float v) { return store_as<bf16_t>(v).bits; }

// Cm[RB, nc] (= Cm, bias[r] or 0) + sum over q of A(r, q) . B[q, 0:nc], A and B in paired words;
// A(r, q) = A[r * ars + q * aqs]. nc <= 32; Full: nc == 32.
template <int RB, bool Full>
FASTNN_INLINE void micro(const uint32_t* __restrict A, int64_t ars, int64_t aqs, const uint32_t* __restrict B,
                         int64_t ldb, float* __restrict Cm, int64_t ldc, int64_t Q, int64_t nc,
                         const float* __restrict bias, bool accumulate) {
  const __mmask16 m0 = Full ? __mmask16(0xffff) : __mmask16(nc >= 16 ? 0xffff : (1u << nc) - 1);
  const __mmask16 m1 = Full ? __mmask16(0xffff) : __mmask16(nc <= 16 ? 0 : nc >= 32 ? 0xffff : (1u << (nc - 16)) - 1);
  __m512 acc[RB][2];
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) {
    if (accumulate) {
      acc[r][0] = _mm512_maskz_loadu_ps(m0, Cm + r * ldc);
      acc[r][1] = _mm512_maskz_loadu_ps(m1, Cm + r * ldc + 16);
    } else {
      acc[r][0] = acc[r][1] = _mm512_set1_ps(bias ? bias[r] : 0.f);
    }
  }
  for (int64_t q = 0; q < Q; ++q) {
    const __m512bh b0 = (__m512bh)_mm512_maskz_loadu_epi32(m0, B + q * ldb);
    const __m512bh b1 = (__m512bh)_mm512_maskz_loadu_epi32(m1, B + q * ldb + 16);
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32((int)A[r * ars + q * aqs]);
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, b0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, b1);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) {
    _mm512_mask_storeu_ps(Cm + r * ldc, m0, acc[r][0]);
    _mm512_mask_storeu_ps(Cm + r * ldc + 16, m1, acc[r][1]);
  }
}

template <int RB>
FASTNN_INLINE void row_block(const uint32_t* A, int64_t ars, int64_t aqs, const uint32_t* B, int64_t ldb, float* Cm,
                             int64_t ldc, int64_t N, int64_t Q, const float* bias, bool accumulate) {
  int64_t j = 0;
  for (; j + 32 <= N; j += 32) micro<RB, true>(A, ars, aqs, B + j, ldb, Cm + j, ldc, Q, 32, bias, accumulate);
  if (j < N) micro<RB, false>(A, ars, aqs, B + j, ldb, Cm + j, ldc, Q, N - j, bias, accumulate);
}

// Cm[M, N] = init + A[M, Q pairs] . B[Q pairs, N]; init: Cm when accumulate, else bias[i] or 0.
inline void gemm(const uint32_t* A, int64_t ars, int64_t aqs, const uint32_t* B, int64_t ldb, float* Cm, int64_t ldc,
                 int64_t M, int64_t N, int64_t Q, const float* bias, bool accumulate) {
  int64_t i = 0;
  for (; i + 8 <= M; i += 8)
    row_block<8>(A + i * ars, ars, aqs, B, ldb, Cm + i * ldc, ldc, N, Q, bias ? bias + i : nullptr, accumulate);
  for (; i + 4 <= M; i += 4)
    row_block<4>(A + i * ars, ars, aqs, B, ldb, Cm + i * ldc, ldc, N, Q, bias ? bias + i : nullptr, accumulate);
  for (; i < M; ++i)
    row_block<1>(A + i * ars, ars, aqs, B, ldb, Cm + i * ldc, ldc, N, Q, bias ? bias + i : nullptr, accumulate);
}

FASTNN_INLINE int64_t pairs(int64_t n) { return (n + 1) / 2; }

// Per layer, for forward: W paired along K ([N][pairs(K)] words: the weight's own memory when K is
// even); for backward: W^T paired along N ([K][pairs(N)]); the bias in float32.
struct Params {
  Scratch<const uint32_t*> w;
  Scratch<const float*> b;
  Scratch<uint32_t> words;
  Scratch<float> biases;
  // transposed: for backward, where layer 0's W^T is needed only for an input gradient (first_wt).
  Params(const MlpCpuLayer* layers, int L, bool transposed, bool first_wt = true)
      : w(L), b(L), words(count(layers, L, transposed), false), biases(nbias(layers, L), false) {
    uint32_t* s = words.data();
    float* bs = biases.data();
    for (int l = 0; l < L; ++l) {
      const int64_t K = layers[l].K, N = layers[l].N, Kq = pairs(K), Nq = pairs(N);
      const bf16_t* W = (const bf16_t*)layers[l].w;
      if (transposed && l == 0 && !first_wt) {
        w[l] = nullptr;
      } else if (transposed) {
        // Rows 2q and 2q+1 interleaved into s[k * Nq + q]: read in order, a strided write per word.
        for (int64_t q = 0; q < Nq; ++q) {
          const bf16_t* r0 = W + 2 * q * K;
          for (int64_t k = 0; k < K; ++k) s[k * Nq + q] = pair(bits(r0[k]), 2 * q + 1 < N ? bits(r0[K + k]) : 0u);
        }
        w[l] = s;
        s += K * Nq;
      } else if (K % 2 == 0) {
        w[l] = (const uint32_t*)W;
      } else {
        for (int64_t n = 0; n < N; ++n)
          for (int64_t q = 0; q < Kq; ++q)
            s[n * Kq + q] = pair(bits(W[n * K + 2 * q]), 2 * q + 1 < K ? bits(W[n * K + 2 * q + 1]) : 0u);
        w[l] = s;
        s += N * Kq;
      }
      b[l] = nullptr;
      if (layers[l].b) {
        for (int64_t n = 0; n < N; ++n) bs[n] = load(((const bf16_t*)layers[l].b)[n]);
        b[l] = bs;
        bs += N;
      }
    }
  }
  static int64_t count(const MlpCpuLayer* layers, int L, bool transposed) {
    int64_t n = 0;
    for (int l = 0; l < L; ++l)
      n += transposed ? layers[l].K * pairs(layers[l].N) : layers[l].K % 2 ? layers[l].N * pairs(layers[l].K) : 0;
    return n;
  }
  static int64_t nbias(const MlpCpuLayer* layers, int L) {
    int64_t n = 0;
    for (int l = 0; l < L; ++l) n += layers[l].N;
    return n;
  }
};

// dst[q][i] (q < pairs(F), i < R) = features 2q, 2q+1 of row i, from a caller's row-major
// rows x F bf16 block; pad rows are zero.
inline void pair_features_of_rows(uint32_t* __restrict dst, const bf16_t* __restrict src, int64_t rows, int64_t F) {
  const int64_t Fq = pairs(F);
  for (int64_t q = 0; q < Fq; ++q)
    for (int64_t i = 0; i < R; ++i) {
      const bool in = i < rows;
      const uint32_t lo = in ? bits(src[i * F + 2 * q]) : 0u;
      const uint32_t hi = in && 2 * q + 1 < F ? bits(src[i * F + 2 * q + 1]) : 0u;
      dst[q * R + i] = pair(lo, hi);
    }
}

// dst[q][i] = bf16 of features 2q, 2q+1 of column i of a float32 tile (F x R).
inline void pair_features_of_tile(uint32_t* __restrict dst, const float* __restrict src, int64_t F) {
  const int64_t Fq = pairs(F);
  for (int64_t q = 0; q < Fq; ++q) {
    const float* lo = src + 2 * q * R;
    for (int64_t i = 0; i < R; ++i)
      dst[q * R + i] = pair(round_bits(lo[i]), 2 * q + 1 < F ? round_bits(lo[R + i]) : 0u);
  }
}

// dst[f][p] (p < R / 2) = bf16 of columns 2p, 2p+1 of feature f of a float32 tile (F x R).
inline void pair_rows_of_tile(uint32_t* __restrict dst, const float* __restrict src, int64_t F) {
  for (int64_t f = 0; f < F; ++f)
    for (int64_t p = 0; p < R / 2; ++p)
      dst[f * (R / 2) + p] = pair(round_bits(src[f * R + 2 * p]), round_bits(src[f * R + 2 * p + 1]));
}

// dst[p][k] (p < R / 2, k < K) = the layer input's rows 2p, 2p+1 at feature k, pad rows zero. v(k, i)
// gives the input's bf16 bits.
template <class V>
inline void pair_rows_of_input(uint32_t* __restrict dst, int64_t rows, int64_t K, V v) {
  for (int64_t p = 0; p < R / 2; ++p) {
    const int64_t i = 2 * p;
    for (int64_t k = 0; k < K; ++k)
      dst[p * K + k] = pair(i < rows ? v(k, i) : 0u, i + 1 < rows ? v(k, i + 1) : 0u);
  }
}

// Columns rows..R of an F x R tile are zero (the tile's pad, past the batch's last row).
inline void zero_pad_columns(float* t, int64_t F, int64_t rows) {
  for (int64_t f = 0; f < F; ++f)
    for (int64_t i = rows; i < R; ++i) t[f * R + i] = 0.f;
}

inline int64_t max_pairs_width(const MlpCpuLayer* layers, int L) { return pairs(max_width(layers, L)) * 2; }

inline void forward(const bf16_t* x, bf16_t* out, const MlpCpuLayer* layers, int L, int64_t M) {
  Params prm(layers, L, false);
  const int64_t W = max_pairs_width(layers, L);
  const Chunks ch = chunks_of(M);
#pragma omp parallel if (ch.count > 1 && worth_threads(layers, L, M))
  {
    Scratch<float> z(R * W, false);         // the layer's float32 tile (features x R)
    Scratch<uint32_t> in(R * W / 2, false);  // its input, paired along features
#pragma omp for schedule(static)
    for (int64_t c = 0; c < ch.count; ++c) {
      for (int64_t t0 = c * ch.rows; t0 < imin(M, (c + 1) * ch.rows); t0 += R) {
        const int64_t rows = imin(R, M - t0);
        pair_features_of_rows(in.data(), x + t0 * layers[0].K, rows, layers[0].K);
        for (int l = 0; l < L; ++l) {
          const MlpCpuLayer& ly = layers[l];
          const int64_t N = ly.N;
          gemm(prm.w[l], pairs(ly.K), 1, in.data(), R, z.data(), R, N, R, pairs(ly.K), prm.b[l], false);
          bf16_t* saved = (bf16_t*)ly.saved + t0 * N;  // N x rows
          auto save = [&] {
            for (int64_t f = 0; f < N; ++f)
              for (int64_t i = 0; i < rows; ++i) saved[f * rows + i] = store_as<bf16_t>(z[f * R + i]);
          };
          if (!ly.saves_output) save();
          act_inplace_any(ly.act, z.data(), N * R, ly.slope);
          if (ly.saves_output && !saved_is_output(layers, L, l)) save();
          if (l == L - 1) {
            transpose<float>(out + t0 * N, N, z.data(), R, N, rows);
          } else {
            pair_features_of_tile(in.data(), z.data(), N);
          }
        }
      }
    }
  }
}

inline void backward(const bf16_t* g, const bf16_t* x, const MlpCpuLayer* layers, int L, int64_t M, bf16_t* gi,
                     bf16_t* const* gw, bf16_t* const* gb) {
  Params prm(layers, L, true, gi != nullptr);
  const int64_t W = max_pairs_width(layers, L);
  const Chunks ch = chunks_of(M);
  const int64_t part = partial_elems<float>(layers, L);
  Scratch<float> partial(ch.count * part);
#pragma omp parallel if (ch.count > 1 && worth_threads(layers, L, M))
  {
    Scratch<float> gbuf(2 * R * W);           // gz of the layer and the gradient passed down (F x R)
    Scratch<float> st(R * W, false);          // the layer's saved tile, float32
    Scratch<uint32_t> gz_rows(R * W / 2, false);   // gz paired along rows (the weight gradient's A)
    Scratch<uint32_t> gz_feats(R * W / 2, false);  // gz paired along features (W^T gz's B)
    Scratch<uint32_t> xin(R * W / 2, false);       // the layer's input paired along rows
    float* gcur = gbuf.data();
    float* gnext = gcur + R * W;
#pragma omp for schedule(static)
    for (int64_t c = 0; c < ch.count; ++c) {
      for (int64_t t0 = c * ch.rows; t0 < imin(M, (c + 1) * ch.rows); t0 += R) {
        const int64_t rows = imin(R, M - t0);
        transpose<float>(gcur, R, g + t0 * layers[L - 1].N, layers[L - 1].N, rows, layers[L - 1].N);
        zero_pad_columns(gcur, layers[L - 1].N, rows);
        float* pw = partial.data() + c * part + part;
        for (int l = L - 1; l >= 0; --l) {
          const MlpCpuLayer& ly = layers[l];
          const int64_t K = ly.K, N = ly.N;
          pw -= N * (K + kVL<float>);
          float* pgw = pw;
          float* pgb = pw + N * K;
          const bf16_t* sv = (const bf16_t*)ly.saved + t0 * N;
          if (saved_is_output(layers, L, l)) {
            transpose<float>(st.data(), R, sv, N, rows, N);
          } else {
            for (int64_t f = 0; f < N; ++f)
              for (int64_t i = 0; i < rows; ++i) st[f * R + i] = load(sv[f * rows + i]);
          }
          zero_pad_columns(st.data(), N, rows);
          dispatch_act(Act(ly.act), [&](auto a) { times_grad<decltype(a)::value>(gcur, st.data(), N * R, (float)ly.slope); });
          bias_lanes(pgb, gcur, N, R);
          // The layer's input on this tile, paired along rows: the network input, or the previous
          // layer's output (saved, or recomputed in float32 from its saved pre-activation and rounded).
          if (l == 0) {
            const bf16_t* xt = x + t0 * K;
            pair_rows_of_input(xin.data(), rows, K, [&](int64_t k, int64_t i) { return bits(xt[i * K + k]); });
          } else {
            const MlpCpuLayer& prev = layers[l - 1];
            const bf16_t* ps = (const bf16_t*)prev.saved + t0 * K;  // K x rows
            if (prev.saves_output) {
              pair_rows_of_input(xin.data(), rows, K, [&](int64_t k, int64_t i) { return bits(ps[k * rows + i]); });
            } else {
              dispatch_act(Act(prev.act), [&](auto a) {
                using F = ActFn<decltype(a)::value>;
                const float slope = (float)prev.slope;
                pair_rows_of_input(xin.data(), rows, K, [&](int64_t k, int64_t i) {
                  return round_bits(F::value(load(ps[k * rows + i]), slope));
                });
              });
            }
          }
          pair_rows_of_tile(gz_rows.data(), gcur, N);
          gemm(gz_rows.data(), R / 2, 1, xin.data(), K, pgw, K, N, K, R / 2, nullptr, true);  // gw += gzT x
          if (l > 0 || gi) {
            pair_features_of_tile(gz_feats.data(), gcur, N);
            gemm(prm.w[l], pairs(N), 1, gz_feats.data(), R, gnext, R, K, R, pairs(N), nullptr, false);  // W^T gz
            float* t = gcur;
            gcur = gnext;
            gnext = t;
          }
        }
        if (gi) transpose<float>(gi + t0 * layers[0].K, layers[0].K, gcur, R, layers[0].K, rows);
      }
    }
  }
  reduce_partials(partial.data(), part, ch.count, layers, L, gw, gb);
}

}  // namespace bf16_native
}  // namespace mlp_cpu
}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
