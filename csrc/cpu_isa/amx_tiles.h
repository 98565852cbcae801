// AMX tile primitives for the amx_bf16 kernel tables, in two interchangeable forms with one interface:
//  - AmxHw: the instructions themselves (ldtilecfg, tileloadd, tdpbf16ps, tilestored, tilerelease);
//  - AmxEmu: the same operations on a thread's eight 1 KiB tiles in memory, in plain C++.
// The kernels are templates over the form, so the emulated table runs every line of the AMX kernels'
// data layout (packing, padding, tile loops) on any CPU the rest of its table runs on, and tests check
// it against float64; only the hardware form needs an AMX CPU (cpu_isa.cpp asks the kernel for the
// tile-data permission first).
//
// One fixed configuration: every tile 16 rows x 64 bytes (16 float32 or 16 bf16 pairs per row).
// TDPBF16PS: C[m][n] += A[m][2k] B[k][2n], then += A[m][2k+1] B[k][2n+1], for k in order (bf16
// products are exact in float32; each add rounds to nearest), as Intel's pseudo-code has it. The
// emulation keeps that order but not the hardware's flushing of denormals to zero.
#pragma once
#include <cstdint>
#include <cstring>

namespace fastnn {
inline namespace FASTNN_ISA_NS {
namespace amx {

constexpr int kTileRows = 16;
constexpr int kTileWords = 16;  // 32-bit words per tile row (64 bytes)

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
  TileConfig() {
    for (int t = 0; t < 8; ++t) {
      colsb[t] = 64;
      rows[t] = kTileRows;
    }
  }
};
static_assert(sizeof(TileConfig) == 64, "ldtilecfg reads 64 bytes");

#if defined(FASTNN_AMX_HW)
// The intrinsics paste their tile numbers into the instruction text: literal numbers only, hence
// the chains of cases on the template arguments.
#define FASTNN_TILE_CASES(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
struct AmxHw {
  static void configure() {
    static const TileConfig cfg;
    _tile_loadconfig(&cfg);
  }
  static void release() { _tile_release(); }
  template <int T> static FASTNN_INLINE void load(const void* p, int64_t stride_bytes) {
#define FASTNN_TILE_LOAD(n) if constexpr (T == n) _tile_loadd(n, p, stride_bytes);
    FASTNN_TILE_CASES(FASTNN_TILE_LOAD)
#undef FASTNN_TILE_LOAD
  }
  template <int T> static FASTNN_INLINE void store(void* p, int64_t stride_bytes) {
#define FASTNN_TILE_STORE(n) if constexpr (T == n) _tile_stored(n, p, stride_bytes);
    FASTNN_TILE_CASES(FASTNN_TILE_STORE)
#undef FASTNN_TILE_STORE
  }
  // The kernels' four products: C tiles 0-3 from A tiles 4-5 and B tiles 6-7.
  template <int C, int A, int B> static FASTNN_INLINE void dp() {
    static_assert(C >= 0 && C < 4 && A == 4 + C / 2 && B == 6 + C % 2, "the products of AmxMm::block");
    if constexpr (C == 0) _tile_dpbf16ps(0, 4, 6);
    if constexpr (C == 1) _tile_dpbf16ps(1, 4, 7);
    if constexpr (C == 2) _tile_dpbf16ps(2, 5, 6);
    if constexpr (C == 3) _tile_dpbf16ps(3, 5, 7);
  }
};
#undef FASTNN_TILE_CASES
#endif

struct AmxEmu {
  struct Tiles {
    alignas(64) uint32_t t[8][kTileRows][kTileWords];
  };
  static Tiles& regs() {
    static thread_local Tiles r;
    return r;
  }
  static void configure() { std::memset(&regs(), 0, sizeof(Tiles)); }  // ldtilecfg zeroes the tiles
  static void release() {}
  template <int T> static void load(const void* p, int64_t stride_bytes) {
    for (int r = 0; r < kTileRows; ++r) std::memcpy(regs().t[T][r], (const char*)p + r * stride_bytes, 64);
  }
  template <int T> static void store(void* p, int64_t stride_bytes) {
    for (int r = 0; r < kTileRows; ++r) std::memcpy((char*)p + r * stride_bytes, regs().t[T][r], 64);
  }
  static float lo(uint32_t w) { return __builtin_bit_cast(float, w << 16); }
  static float hi(uint32_t w) { return __builtin_bit_cast(float, w & 0xffff0000u); }
  template <int C, int A, int B> static void dp() {
    auto& t = regs().t;
    for (int m = 0; m < kTileRows; ++m) {
      float c[kTileWords];
      for (int n = 0; n < kTileWords; ++n) c[n] = __builtin_bit_cast(float, t[C][m][n]);
      for (int k = 0; k < kTileWords; ++k) {  // per output, k ascending, low half then high half
        const float al = lo(t[A][m][k]), ah = hi(t[A][m][k]);
        for (int n = 0; n < kTileWords; ++n) c[n] += al * lo(t[B][k][n]);
        for (int n = 0; n < kTileWords; ++n) c[n] += ah * hi(t[B][k][n]);
      }
      for (int n = 0; n < kTileWords; ++n) t[C][m][n] = __builtin_bit_cast(uint32_t, c[n]);
    }
  }
};

}  // namespace amx
}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
