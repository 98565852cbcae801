// The CPU floating-point environment around fastnn's kernels (CPU translation units only).
#pragma once
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace fastnn {

// FTZ/DAZ off for this scope on this thread. torch.set_flush_denormal(True) sets them on the
// calling thread only, so an 8-bit optimizer step whose blocks run on several threads would flush
// float32 subnormals in some blocks and not in others; with this its codes are the same in either
// mode and for any thread count.
struct KeepSubnormals {
#if defined(__x86_64__) || defined(__i386__)
  unsigned csr = _mm_getcsr();
  KeepSubnormals() { _mm_setcsr(csr & ~0x8040u); }
  ~KeepSubnormals() { _mm_setcsr(csr); }
  KeepSubnormals(const KeepSubnormals&) = delete;
  KeepSubnormals& operator=(const KeepSubnormals&) = delete;
#endif
};

}  // namespace fastnn
