// The CPU multi-tensor launcher: one parallel region per step for all tensors of all groups, with
// the elements split evenly across threads regardless of tensor boundaries (torch's fused CPU
// optimizers fork/join once per tensor). Each thread streams its range through the rule in
// optim_functors.h, instantiated per flag combination so the inner loop is branch-free.
#pragma once
#include <cstdint>
#include <type_traits>
#include <omp.h>

#include "../common/storage.h"
#include "optim_cpu.h"
#include "optim_functors.h"

// No fused multiply-adds beyond the ones the rules spell out: torch's results depend on which
// operations are fused, and the compiler must not fuse others on its own.
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")

namespace fastnn {
inline namespace FASTNN_ISA_NS {
namespace optim_cpu {
using namespace optim_rules;

constexpr int64_t kParallelMinElems = 1 << 16;

// Calls g(std::integral_constant<int, F>) where F is `flags` restricted to Bits..., known at compile time.
template <int Acc, class G> FASTNN_INLINE void with_flags(int, G&& g) { g(std::integral_constant<int, Acc>{}); }
template <int Acc, int B, int... Rest, class G> FASTNN_INLINE void with_flags(int flags, G&& g) {
  if (flags & B) with_flags<Acc | B, Rest...>(flags, g);
  else with_flags<Acc, Rest...>(flags, g);
}

// Elements [b, e) of one tensor; F is a constant, so the loop body has no branches left.
template <class T, OptKind K, int F>
void update_range(const OptSlot& s, int64_t b, int64_t e, const float* gs) {
  using C = compute_t<T>;
  const auto c = KindConsts<K, C>::make(s.k);
  const C scale = gs ? (C)*gs : C(1);
  T* __restrict p = (T*)s.param;
  const T* __restrict g = (const T*)s.grad;
  T* __restrict s0 = (T*)s.state[0];
  T* __restrict s1 = (T*)s.state[1];
  T* __restrict s2 = (T*)s.state[2];
  for (int64_t i = b; i < e; ++i) update_element<K, CpuIO>(F, c, p, g, s0, s1, s2, i, scale);
}

template <class T>
FASTNN_INLINE void run_range(OptKind kind, const OptSlot& s, int64_t b, int64_t e, const float* gs) {
  const int f = s.flags | (gs ? kUnscale : 0);
  switch (kind) {
    case OptKind::Adam:
      with_flags<0, kMaximize, kWeightDecay, kAmsgrad, kDecoupled, kUnscale>(
          f, [&](auto F) { update_range<T, OptKind::Adam, decltype(F)::value>(s, b, e, gs); });
      break;
    case OptKind::RMSprop:
      with_flags<0, kMaximize, kWeightDecay, kCentered, kMomentum, kUnscale>(
          f, [&](auto F) { update_range<T, OptKind::RMSprop, decltype(F)::value>(s, b, e, gs); });
      break;
    case OptKind::SGD:
      with_flags<0, kMaximize, kWeightDecay, kMomentum, kNesterov, kFirstStep, kUnscale>(
          f, [&](auto F) { update_range<T, OptKind::SGD, decltype(F)::value>(s, b, e, gs); });
      break;
    case OptKind::Adagrad:
      with_flags<0, kMaximize, kWeightDecay, kUnscale>(
          f, [&](auto F) { update_range<T, OptKind::Adagrad, decltype(F)::value>(s, b, e, gs); });
      break;
  }
}

inline void step(OptKind kind, DType dtype, const OptSlot* slots, int64_t nslots, const float* gs) {
  Scratch<int64_t> start(nslots + 1);  // prefix sums of numel
  for (int64_t i = 0; i < nslots; ++i) start[i + 1] = start[i] + slots[i].numel;
  const int64_t total = start[nslots];
  const int nt = total >= kParallelMinElems ? omp_get_max_threads() : 1;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
#pragma omp parallel num_threads(nt)
    {
      const int64_t t = omp_get_thread_num(), T_ = omp_get_num_threads();
      // Split points rounded to 64 elements so no two threads write into one cache line.
      const int64_t lo = t == 0 ? 0 : (total * t / T_) & ~int64_t(63);
      const int64_t hi = t == T_ - 1 ? total : (total * (t + 1) / T_) & ~int64_t(63);
      int64_t a = 0, z = nslots;  // first slot whose range ends after lo
      while (a < z) {
        int64_t mid = (a + z) / 2;
        if (start[mid + 1] <= lo) a = mid + 1; else z = mid;
      }
      for (int64_t i = a; i < nslots && start[i] < hi; ++i) {
        const int64_t b = imax(lo, start[i]) - start[i], e = imin(hi, start[i + 1]) - start[i];
        if (b < e) run_range<T>(kind, slots[i], b, e, gs);
      }
    }
  });
}

inline const OptimCpuKernels& table() {
  static const OptimCpuKernels t{step};
  return t;
}

}  // namespace optim_cpu
}  // namespace FASTNN_ISA_NS
}  // namespace fastnn

#pragma GCC pop_options
