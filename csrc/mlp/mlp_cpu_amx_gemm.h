// The native bf16 whole-MLP kernels' matrix products on AMX tiles (the amx_bf16 kernel tables,
// csrc/cpu_isa/amx_bf16.cpp): the same interface as VdpMm (mlp_cpu_bf16_kernels.h), over either tile
// form of csrc/cpu_isa/amx_tiles.h (the instructions, or their emulation for testing anywhere).
//
// Every operand is brought to whole tiles: A to rows and pairs in multiples of 16 (the prepacked
// weights already are: Params pads them), B to pairs in multiples of 16 and columns in multiples of
// 32, C into a float32 block of that padded size, initialised from C, the bias or zero; the pads are
// zero, so they add nothing. A block of 32 x 32 outputs holds four C tiles, two A and two B tiles
// (all eight tile registers): each B tile loaded serves two A tiles and vice versa.
#pragma once
#include <cstdint>

#include "../cpu_isa/amx_tiles.h"

namespace fastnn {
inline namespace FASTNN_ISA_NS {
namespace mlp_cpu {
namespace bf16_native {

template <class Tiles>
struct AmxMm {
  static constexpr int64_t kPad = amx::kTileRows;
  static constexpr int64_t kGwRowBlock = 32;

  // rb row tiles (1 or 2) x 2 column tiles of C at c (ldc floats), over Q16 pairs.
  template <int RB>
  static FASTNN_INLINE void block(const uint32_t* a, int64_t lda, const uint32_t* b, int64_t ldb, float* c,
                                  int64_t ldc, int64_t Q16) {
    const int64_t sc = ldc * 4, sa = lda * 4, sb = ldb * 4;
    Tiles::template load<0>(c, sc);
    Tiles::template load<1>(c + 16, sc);
    if (RB == 2) {
      Tiles::template load<2>(c + 16 * ldc, sc);
      Tiles::template load<3>(c + 16 * ldc + 16, sc);
    }
    for (int64_t q = 0; q < Q16; q += 16) {
      Tiles::template load<4>(a + q, sa);
      Tiles::template load<6>(b + q * ldb, sb);
      Tiles::template load<7>(b + q * ldb + 16, sb);
      Tiles::template dp<0, 4, 6>();
      Tiles::template dp<1, 4, 7>();
      if (RB == 2) {
        Tiles::template load<5>(a + 16 * lda + q, sa);
        Tiles::template dp<2, 5, 6>();
        Tiles::template dp<3, 5, 7>();
      }
    }
    Tiles::template store<0>(c, sc);
    Tiles::template store<1>(c + 16, sc);
    if (RB == 2) {
      Tiles::template store<2>(c + 16 * ldc, sc);
      Tiles::template store<3>(c + 16 * ldc + 16, sc);
    }
  }

  // Cm[M, N] = init + A . B as bf16_native::gemm; a_padded: A is a Params weight (aqs == 1, rows and
  // pairs padded with zeros to multiples of 16, ars words apart).
  static void gemm(const uint32_t* A, int64_t ars, int64_t aqs, const uint32_t* B, int64_t ldb, float* Cm,
                   int64_t ldc, int64_t M, int64_t N, int64_t Q, const float* bias, bool accumulate, bool a_padded) {
    if (M <= 0 || N <= 0) return;
    const int64_t M16 = round_up(M, 16), N32 = round_up(N, 32), Q16 = round_up(Q, 16);
    using WS = ThreadWorkspace;
    WS ws(WS::rounded(4 * (a_padded ? 0 : M16 * Q16)) + WS::rounded(4 * Q16 * N32) + WS::rounded(4 * M16 * N32), 2);
    const uint32_t* Ap = A;
    int64_t lda = ars;
    if (!a_padded) {
      uint32_t* p = ws.take<uint32_t>(M16 * Q16);
      for (int64_t r = 0; r < M16; ++r)
        for (int64_t q = 0; q < Q16; ++q) p[r * Q16 + q] = r < M && q < Q ? A[r * ars + q * aqs] : 0u;
      Ap = p;
      lda = Q16;
    }
    uint32_t* Bp = ws.take<uint32_t>(Q16 * N32);
    for (int64_t q = 0; q < Q16; ++q)
      for (int64_t n = 0; n < N32; ++n) Bp[q * N32 + n] = q < Q && n < N ? B[q * ldb + n] : 0u;
    float* Cp = ws.take<float>(M16 * N32);
    for (int64_t r = 0; r < M16; ++r)
      for (int64_t n = 0; n < N32; ++n)
        Cp[r * N32 + n] = r >= M || n >= N ? 0.f : accumulate ? Cm[r * ldc + n] : bias ? bias[r] : 0.f;
    Tiles::configure();
    int64_t i = 0;
    for (; i + 32 <= M16; i += 32)
      for (int64_t j = 0; j < N32; j += 32) block<2>(Ap + i * lda, lda, Bp + j, N32, Cp + i * N32 + j, N32, Q16);
    for (; i < M16; i += 16)
      for (int64_t j = 0; j < N32; j += 32) block<1>(Ap + i * lda, lda, Bp + j, N32, Cp + i * N32 + j, N32, Q16);
    Tiles::release();
    for (int64_t r = 0; r < M; ++r)
      for (int64_t n = 0; n < N; ++n) Cm[r * ldc + n] = Cp[r * N32 + n];
  }
};

}  // namespace bf16_native
}  // namespace mlp_cpu
}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
