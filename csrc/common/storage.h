// Storage types of the CPU kernels and their loads/stores in the compute type, torch-free so that
// the per-ISA translation units include no torch headers (no shared inline symbols, fast builds).
#pragma once
#include <cstdint>
#include "hd.h"

namespace fastnn {

enum class DType : int { F32 = 0, F64 = 1, BF16 = 2 };

struct bf16_t { uint16_t bits; };

inline namespace FASTNN_ISA_NS {

template <class T> struct Compute { using type = float; };
template <> struct Compute<double> { using type = double; };
template <class T> using compute_t = typename Compute<T>::type;

FASTNN_INLINE float load(float v) { return v; }
FASTNN_INLINE double load(double v) { return v; }
FASTNN_INLINE float load(bf16_t v) { return __builtin_bit_cast(float, (uint32_t)v.bits << 16); }
// A 32-bit word (two bf16 packed) carried through float registers unchanged, so the float block
// transposes move packed pairs too.
FASTNN_INLINE float load(uint32_t v) { return __builtin_bit_cast(float, v); }

template <class T> FASTNN_INLINE T store_as(compute_t<T> v) { return v; }
// Round to nearest even; NaN stays NaN (the rounding add could otherwise carry it into inf).
template <> FASTNN_INLINE bf16_t store_as<bf16_t>(float v) {
  uint32_t u = __builtin_bit_cast(uint32_t, v);
  uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return bf16_t{(uint16_t)(v != v ? 0x7fc0u : r)};
}

// Stochastic rounding to bf16: 16 random bits added below the kept ones, then truncated, so a value
// rounds away from zero with probability (its dropped bits) / 2^16; NaN stays NaN.
FASTNN_INLINE bf16_t store_bf16_stochastic(float v, uint32_t r16) {
  const uint32_t u = __builtin_bit_cast(uint32_t, v);
  return bf16_t{(uint16_t)(v != v ? 0x7fc0u : (u + r16) >> 16)};
}
template <class T> FASTNN_INLINE T store_stochastic(compute_t<T> v, uint32_t) { return v; }
template <> FASTNN_INLINE bf16_t store_stochastic<bf16_t>(float v, uint32_t r16) { return store_bf16_stochastic(v, r16); }

template <> FASTNN_INLINE uint32_t store_as<uint32_t>(float v) { return __builtin_bit_cast(uint32_t, v); }

// load/store as a type, for code shared with the CUDA launchers (optim_functors.h).
struct CpuIO {
  template <class T> static FASTNN_INLINE compute_t<T> ld(T v) { return load(v); }
  template <class T> static FASTNN_INLINE T st(compute_t<T> v) { return store_as<T>(v); }
  // bf16: stochastic rounding with the 16 bits r16; wider types store exactly as st.
  template <class T> static FASTNN_INLINE T st_stochastic(compute_t<T> v, uint32_t r16) {
    return store_stochastic<T>(v, r16);
  }
};

// Calls f(T{}) with the storage type named by d.
template <class F>
inline void dispatch_dtype(DType d, F&& f) {
  switch (d) {
    case DType::F32: f(float{}); break;
    case DType::F64: f(double{}); break;
    case DType::BF16: f(bf16_t{}); break;
  }
}

}  // namespace FASTNN_ISA_NS
}  // namespace fastnn

namespace fastnn {
inline namespace FASTNN_ISA_NS {

FASTNN_INLINE int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
FASTNN_INLINE int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

#if !defined(__CUDACC__)
// Scratch buffer, zero-filled unless zero=false. Our own (not std::vector) so that no std template
// is instantiated inside a per-ISA translation unit under a widened target.
template <class C>
struct Scratch {
  C* p;
  explicit Scratch(int64_t n, bool zero = true) : p(n > 0 ? (zero ? new C[n]() : new C[n]) : nullptr) {}
  ~Scratch() { delete[] p; }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  C* data() { return p; }
  C& operator[](int64_t i) { return p[i]; }
};

// Memory a thread reuses across calls, for the large per-call scratch of one kernel at a time on
// that thread: a fresh heap block of that size comes from mmap, and writing it faults in every
// page again on each call. Grow-only, held until the thread exits. Carve it with take(). Slots:
// 0 a kernel's scratch, 1 its converted weights (Params), which live alongside, 2 the AMX
// products' padded operands (mlp_cpu_amx_gemm.h).
struct ThreadWorkspace {
  char* p;
  static int64_t rounded(int64_t bytes) { return (bytes + 63) / 64 * 64; }
  explicit ThreadWorkspace(int64_t bytes, int slot = 0) {
    struct Block {
      char* mem = nullptr;
      int64_t n = 0;
      ~Block() { delete[] mem; }
    };
    static thread_local Block blocks[3];
    Block& b = blocks[slot];
    if (b.n < bytes) {
      delete[] b.mem;
      b.mem = new char[bytes + 64];
      b.n = bytes;
    }
    p = b.mem + (64 - reinterpret_cast<uintptr_t>(b.mem) % 64) % 64;
  }
  // The next n elements of C, 64-byte aligned; the workspace's size is the sum of rounded() sizes.
  template <class C> C* take(int64_t n) {
    C* r = reinterpret_cast<C*>(p);
    p += rounded(n * int64_t(sizeof(C)));
    return r;
  }
};
#endif

}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
