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

FASTNN_INLINE int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// The matrix products on AVX512_BF16 vectors (vdpbf16ps), the kernels' default engine; the amx_bf16
// tables substitute AmxMm (mlp_cpu_amx_gemm.h) with the same interface. kPad: the row and pair
// multiple of the weights Params prepacks; kGwRowBlock: gw rows per work item of backward's
// weight-gradient GEMMs; a_padded: A is such a prepacked weight (the vector kernels need no padding).
struct VdpMm {
  static constexpr int64_t kPad = 1;
  static constexpr int64_t kGwRowBlock = 8;
  static void gemm(const uint32_t* A, int64_t ars, int64_t aqs, const uint32_t* B, int64_t ldb, float* Cm,
                   int64_t ldc, int64_t M, int64_t N, int64_t Q, const float* bias, bool accumulate, bool) {
    bf16_native::gemm(A, ars, aqs, B, ldb, Cm, ldc, M, N, Q, bias, accumulate);
  }
};

// Per layer, for forward: W paired along K ([N][ld] words, ld = pairs(K) rounded up to Pad, rows
// rounded up to Pad, pads zero; with Pad 1 and K even, the weight's own memory); for backward: W^T
// paired along N ([K][ld], ld = pairs(N) rounded up); the bias in float32.
template <int64_t Pad>
struct Params {
  Scratch<const uint32_t*> w;
  Scratch<int64_t> ld;
  Scratch<const float*> b;
  // transposed: for backward, where layer 0's W^T is needed only for an input gradient (first_wt).
  Params(const MlpCpuLayer* layers, int L, bool transposed, bool first_wt = true) : w(L), ld(L), b(L) {
    const int64_t nw = count(layers, L, transposed), nb = nbias(layers, L);
    ThreadWorkspace store(ThreadWorkspace::rounded(4 * nw) + ThreadWorkspace::rounded(4 * nb), 1);
    uint32_t* s = store.take<uint32_t>(nw);
    float* bs = store.take<float>(nb);
    for (int l = 0; l < L; ++l) {
      const int64_t K = layers[l].K, N = layers[l].N, Kq = pairs(K), Nq = pairs(N);
      const bf16_t* W = (const bf16_t*)layers[l].w;
      if (transposed && l == 0 && !first_wt) {
        w[l] = nullptr;
      } else if (transposed) {
        // Rows 2q and 2q+1 interleaved into s[k * ld + q]: read in order, a strided write per word.
        const int64_t lt = round_up(Nq, Pad), Kp = round_up(K, Pad);
        for (int64_t q = 0; q < Nq; ++q) {
          const bf16_t* r0 = W + 2 * q * K;
          for (int64_t k = 0; k < K; ++k) s[k * lt + q] = pair(bits(r0[k]), 2 * q + 1 < N ? bits(r0[K + k]) : 0u);
        }
        for (int64_t k = 0; k < Kp; ++k)
          for (int64_t q = k < K ? Nq : 0; q < lt; ++q) s[k * lt + q] = 0u;
        w[l] = s;
        ld[l] = lt;
        s += Kp * lt;
      } else if (Pad == 1 && K % 2 == 0) {
        w[l] = (const uint32_t*)W;
        ld[l] = Kq;
      } else {
        const int64_t lf = round_up(Kq, Pad), Np = round_up(N, Pad);
        for (int64_t n = 0; n < Np; ++n)
          for (int64_t q = 0; q < lf; ++q)
            s[n * lf + q] = n < N && q < Kq ? pair(bits(W[n * K + 2 * q]), 2 * q + 1 < K ? bits(W[n * K + 2 * q + 1]) : 0u)
                                            : 0u;
        w[l] = s;
        ld[l] = lf;
        s += Np * lf;
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
    for (int l = 0; l < L; ++l) {
      const int64_t K = layers[l].K, N = layers[l].N;
      if (transposed) n += round_up(K, Pad) * round_up(pairs(N), Pad);
      else if (Pad > 1 || K % 2) n += round_up(N, Pad) * round_up(pairs(K), Pad);
    }
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

// dst[p][k] (p < R / 2, k < K) = the rows 2p, 2p+1 of a row-major rows x K bf16 block at feature
// k; pad rows zero.
inline void pair_rows_of_rows(uint32_t* __restrict dst, const bf16_t* __restrict src, int64_t rows, int64_t K) {
  for (int64_t p = 0; p < R / 2; ++p) {
    const int64_t i = 2 * p;
    const bf16_t* r0 = src + i * K;
    if (i + 1 < rows) {
      for (int64_t k = 0; k < K; ++k) dst[p * K + k] = pair(bits(r0[k]), bits(r0[K + k]));
    } else {
      for (int64_t k = 0; k < K; ++k) dst[p * K + k] = i < rows ? bits(r0[k]) : 0u;
    }
  }
}

// Columns rows..R of an F x R tile are zero (the tile's pad, past the batch's last row).
inline void zero_pad_columns(float* t, int64_t F, int64_t rows) {
  for (int64_t f = 0; f < F; ++f)
    for (int64_t i = rows; i < R; ++i) t[f * R + i] = 0.f;
}

// out[f] = the sum of feature f's R columns of a float32 tile, in a fixed pairwise order.
inline void row_sums(float* __restrict out, const float* __restrict t, int64_t F) {
  for (int64_t f = 0; f < F; ++f) {
    float s[R / 2];
    for (int v = 0; v < R / 2; ++v) s[v] = t[f * R + v] + t[f * R + R / 2 + v];
    for (int w = R / 4; w >= 1; w /= 2)
      for (int v = 0; v < w; ++v) s[v] += s[v + w];
    out[f] = s[0];
  }
}

inline int64_t max_pairs_width(const MlpCpuLayer* layers, int L) { return pairs(max_width(layers, L)) * 2; }

template <class Mm>
void forward(const bf16_t* x, bf16_t* out, const MlpCpuLayer* layers, int L, int64_t M) {
  Params<Mm::kPad> prm(layers, L, false);
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
          Mm::gemm(prm.w[l], prm.ld[l], 1, in.data(), R, z.data(), R, N, R, pairs(ly.K), prm.b[l], false, true);
          bf16_t* saved = ly.saved ? (bf16_t*)ly.saved + t0 * N : nullptr;  // N x rows; none: output only
          auto save = [&] {
            if (!saved) return;
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

// Backward runs in groups of up to kGroupRows rows (a multiple of R). Per group, (1) each tile
// walks the layers down as in the float32 kernels and leaves, per layer, its gz and its input as bf16
// pairs along the batch in group-wide buffers ([row pair][feature]) and its gz row sums; (2) every
// weight gradient is then one GEMM over the whole group (gw += gz^T x, the batch as the reduction),
// split over blocks of gw's rows. Per-tile updates of a float32 gw would re-read all of gw for every
// 32 rows: at notMNIST's 784 x 256 that traffic, not the products, bounded backward. Every element's
// sum runs in the same order for any thread count.
constexpr int64_t kGroupRows = 512;

template <class Mm>
void backward(const bf16_t* g, const bf16_t* x, const MlpCpuLayer* layers, int L, int64_t M, bf16_t* gi,
              bf16_t* const* gw, bf16_t* const* gb) {
  constexpr int64_t kGwRowBlock = Mm::kGwRowBlock;
  Params<Mm::kPad> prm(layers, L, true, gi != nullptr);
  const int64_t W = max_pairs_width(layers, L);
  const int64_t G = imin(kGroupRows, (M + R - 1) / R * R);
  // Per layer: float32 sums of gw and gb over the groups; the group's gz pairs, input pairs, tile sums.
  Scratch<int64_t> off_w(L + 1), off_b(L + 1), off_z(L + 1), off_x(L + 1);
  for (int l = 0; l < L; ++l) {
    off_w[l + 1] = off_w[l] + layers[l].N * layers[l].K;
    off_b[l + 1] = off_b[l] + layers[l].N;
    off_z[l + 1] = off_z[l] + G / 2 * layers[l].N;
    off_x[l + 1] = off_x[l] + G / 2 * layers[l].K;
  }
  using WS = ThreadWorkspace;
  WS ws(WS::rounded(4 * off_w[L]) + WS::rounded(4 * off_b[L]) + WS::rounded(4 * G / R * off_b[L]) +
        WS::rounded(4 * off_z[L]) + WS::rounded(4 * off_x[L]));
  float* gw_sum = ws.take<float>(off_w[L]);
  float* gb_sum = ws.take<float>(off_b[L]);
  float* tile_sums = ws.take<float>(G / R * off_b[L]);
  uint32_t* gz_pairs = ws.take<uint32_t>(off_z[L]);
  uint32_t* in_pairs = ws.take<uint32_t>(off_x[L]);
  for (int64_t e = 0; e < off_b[L]; ++e) gb_sum[e] = 0.f;
  int64_t items = 0;  // blocks of gw rows, over every layer
  for (int l = 0; l < L; ++l) items += (layers[l].N + kGwRowBlock - 1) / kGwRowBlock;
  for (int64_t g0 = 0; g0 < M; g0 += G) {
    const int64_t tiles = (imin(M - g0, G) + R - 1) / R, Q = tiles * R / 2;
    const bool first = g0 == 0, last = g0 + G >= M;
#pragma omp parallel if (worth_threads(layers, L, M))
    {
      Scratch<float> gbuf(2 * R * W);       // gz of the layer and the gradient passed down (F x R)
      Scratch<float> st(R * W, false);      // a saved tile in float32
      Scratch<uint32_t> wt(R * W / 2, false);       // a tile paired along rows (F x R/2 words)
      Scratch<uint32_t> gz_feats(R * W / 2, false);  // gz paired along features (W^T gz's B)
      float* gcur = gbuf.data();
      float* gnext = gcur + R * W;
#pragma omp for schedule(static)
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t t0 = g0 + t * R, rows = imin(R, M - t0), tq = t * R / 2;
        transpose<float>(gcur, R, g + t0 * layers[L - 1].N, layers[L - 1].N, rows, layers[L - 1].N);
        zero_pad_columns(gcur, layers[L - 1].N, rows);
        for (int l = L - 1; l >= 0; --l) {
          const MlpCpuLayer& ly = layers[l];
          const int64_t K = ly.K, N = ly.N;
          const bf16_t* sv = (const bf16_t*)ly.saved + t0 * N;
          if (saved_is_output(layers, L, l)) {
            transpose<float>(st.data(), R, sv, N, rows, N);
          } else {
            for (int64_t f = 0; f < N; ++f)
              for (int64_t i = 0; i < rows; ++i) st[f * R + i] = load(sv[f * rows + i]);
          }
          zero_pad_columns(st.data(), N, rows);
          dispatch_act(Act(ly.act), [&](auto a) { times_grad<decltype(a)::value>(gcur, st.data(), N * R, (float)ly.slope); });
          row_sums(tile_sums + G / R * off_b[l] + t * N, gcur, N);
          pair_rows_of_tile(wt.data(), gcur, N);
          transpose<float>(gz_pairs + off_z[l] + tq * N, N, wt.data(), R / 2, N, R / 2);
          // The layer's input on this tile, paired along rows: the network input, or the previous
          // layer's output (saved, or recomputed in float32 from its saved pre-activation and rounded).
          uint32_t* xp = in_pairs + off_x[l] + tq * K;
          if (l == 0) {
            pair_rows_of_rows(xp, x + t0 * K, rows, K);
          } else {
            const MlpCpuLayer& prev = layers[l - 1];
            const bf16_t* ps = (const bf16_t*)prev.saved + t0 * K;  // K x rows
            if (prev.saves_output && rows == R) {
              transpose<float>(xp, K, (const uint32_t*)ps, R / 2, K, R / 2);
            } else {
              for (int64_t f = 0; f < K; ++f)
                for (int64_t i = 0; i < rows; ++i) st[f * R + i] = load(ps[f * rows + i]);
              zero_pad_columns(st.data(), K, rows);
              if (!prev.saves_output) act_inplace_any(prev.act, st.data(), K * R, prev.slope);
              pair_rows_of_tile(wt.data(), st.data(), K);
              transpose<float>(xp, K, wt.data(), R / 2, K, R / 2);
            }
          }
          if (l > 0 || gi) {
            pair_features_of_tile(gz_feats.data(), gcur, N);
            Mm::gemm(prm.w[l], prm.ld[l], 1, gz_feats.data(), R, gnext, R, K, R, pairs(N), nullptr, false, true);  // W^T gz
            float* tmp = gcur;
            gcur = gnext;
            gnext = tmp;
          }
        }
        if (gi) transpose<float>(gi + t0 * layers[0].K, layers[0].K, gcur, R, layers[0].K, rows);
      }
      // gw[rows n0..n1) += gz^T x over the group; gb likewise from the tiles' sums in tile order.
      // Blocks differ in size across layers: dynamic balances them (each block's bits are the same
      // on any thread).
#pragma omp for schedule(dynamic, 1)
      for (int64_t it = 0; it < items; ++it) {
        int l = 0;
        int64_t b = it;
        while (b >= (layers[l].N + kGwRowBlock - 1) / kGwRowBlock) b -= (layers[l++].N + kGwRowBlock - 1) / kGwRowBlock;
        const int64_t K = layers[l].K, N = layers[l].N, n0 = b * kGwRowBlock, nb = imin(kGwRowBlock, N - n0);
        float* acc = gw_sum + off_w[l] + n0 * K;
        Mm::gemm(gz_pairs + off_z[l] + n0, 1, N, in_pairs + off_x[l], K, acc, K, nb, K, Q, nullptr, !first, false);
        float* bsum = gb_sum + off_b[l] + n0;
        const float* ts = tile_sums + G / R * off_b[l] + n0;
        for (int64_t t = 0; t < tiles; ++t)
          for (int64_t n = 0; n < nb; ++n) bsum[n] += ts[t * N + n];
        if (last) {
          for (int64_t e = 0; e < nb * K; ++e) gw[l][n0 * K + e] = store_as<bf16_t>(acc[e]);
          if (gb[l])
            for (int64_t n = 0; n < nb; ++n) gb[l][n0 + n] = store_as<bf16_t>(bsum[n]);
        }
      }
    }
  }
  if (M == 0)
    for (int l = 0; l < L; ++l) {
      for (int64_t e = 0; e < off_w[l + 1] - off_w[l]; ++e) gw[l][e] = store_as<bf16_t>(0.f);
      if (gb[l])
        for (int64_t n = 0; n < layers[l].N; ++n) gb[l][n] = store_as<bf16_t>(0.f);
    }
}

}  // namespace bf16_native
}  // namespace mlp_cpu
}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
