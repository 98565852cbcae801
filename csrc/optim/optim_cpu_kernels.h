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

constexpr int kUnscale = 1 << 12;  // internal flag: divide gradients by grad_scale
constexpr int64_t kParallelMinElems = 1 << 16;

// Calls g(std::integral_constant<int, F>) where F is `flags` restricted to Bits..., known at compile time.
template <int Acc, class G> FASTNN_INLINE void with_flags(int, G&& g) { g(std::integral_constant<int, Acc>{}); }
template <int Acc, int B, int... Rest, class G> FASTNN_INLINE void with_flags(int flags, G&& g) {
  if (flags & B) with_flags<Acc | B, Rest...>(flags, g);
  else with_flags<Acc, Rest...>(flags, g);
}

template <class T> FASTNN_INLINE compute_t<T> unscaled(T g, compute_t<T> scale, bool unscale) {
  return unscale ? load(g) / scale : load(g);
}

template <class T, int F>
void adam_range(const OptSlot& s, int64_t b, int64_t e, const float* gs) {
  using C = compute_t<T>;
  const AdamConsts<C> k = adam_consts<C>(s.k);
  const C scale = gs ? (C)*gs : C(1);
  T* __restrict p = (T*)s.param; const T* __restrict g = (const T*)s.grad;
  T* __restrict m = (T*)s.state[0]; T* __restrict v = (T*)s.state[1]; T* __restrict vm = (T*)s.state[2];
  for (int64_t i = b; i < e; ++i) {
    C pp = load(p[i]), mm = load(m[i]), vv = load(v[i]), vmax = (F & kAmsgrad) ? load(vm[i]) : C(0);
    adam(F, k, pp, unscaled(g[i], scale, F & kUnscale), mm, vv, vmax);
    p[i] = store_as<T>(pp); m[i] = store_as<T>(mm); v[i] = store_as<T>(vv);
    if (F & kAmsgrad) vm[i] = store_as<T>(vmax);
  }
}

template <class T, int F>
void rmsprop_range(const OptSlot& s, int64_t b, int64_t e, const float* gs) {
  using C = compute_t<T>;
  const RmspropConsts<C> k = rmsprop_consts<C>(s.k);
  const C scale = gs ? (C)*gs : C(1);
  T* __restrict p = (T*)s.param; const T* __restrict g = (const T*)s.grad;
  T* __restrict sq = (T*)s.state[0]; T* __restrict ga = (T*)s.state[1]; T* __restrict bf = (T*)s.state[2];
  for (int64_t i = b; i < e; ++i) {
    C pp = load(p[i]), ss = load(sq[i]);
    C aa = (F & kCentered) ? load(ga[i]) : C(0), mb = (F & kMomentum) ? load(bf[i]) : C(0);
    rmsprop(F, k, pp, unscaled(g[i], scale, F & kUnscale), ss, aa, mb);
    p[i] = store_as<T>(pp); sq[i] = store_as<T>(ss);
    if (F & kCentered) ga[i] = store_as<T>(aa);
    if (F & kMomentum) bf[i] = store_as<T>(mb);
  }
}

template <class T, int F>
void sgd_range(const OptSlot& s, int64_t b, int64_t e, const float* gs) {
  using C = compute_t<T>;
  const SgdConsts<C> k = sgd_consts<C>(s.k);
  const C scale = gs ? (C)*gs : C(1);
  T* __restrict p = (T*)s.param; const T* __restrict g = (const T*)s.grad; T* __restrict bf = (T*)s.state[0];
  for (int64_t i = b; i < e; ++i) {
    C pp = load(p[i]), mb = (F & kMomentum) && !(F & kFirstStep) ? load(bf[i]) : C(0);
    sgd(F, k, pp, unscaled(g[i], scale, F & kUnscale), mb);
    p[i] = store_as<T>(pp);
    if (F & kMomentum) bf[i] = store_as<T>(mb);
  }
}

template <class T, int F>
void adagrad_range(const OptSlot& s, int64_t b, int64_t e, const float* gs) {
  using C = compute_t<T>;
  const AdagradConsts<C> k = adagrad_consts<C>(s.k);
  const C scale = gs ? (C)*gs : C(1);
  T* __restrict p = (T*)s.param; const T* __restrict g = (const T*)s.grad; T* __restrict sm = (T*)s.state[0];
  for (int64_t i = b; i < e; ++i) {
    C pp = load(p[i]), ss = load(sm[i]);
    adagrad(F, k, pp, unscaled(g[i], scale, F & kUnscale), ss);
    p[i] = store_as<T>(pp); sm[i] = store_as<T>(ss);
  }
}

template <class T>
FASTNN_INLINE void run_range(OptKind kind, const OptSlot& s, int64_t b, int64_t e, const float* gs) {
  const int f = s.flags | (gs ? kUnscale : 0);
  switch (kind) {
    case OptKind::Adam:
      with_flags<0, kMaximize, kWeightDecay, kAmsgrad, kDecoupled, kUnscale>(
          f, [&](auto F) { adam_range<T, decltype(F)::value>(s, b, e, gs); });
      break;
    case OptKind::RMSprop:
      with_flags<0, kMaximize, kWeightDecay, kCentered, kMomentum, kUnscale>(
          f, [&](auto F) { rmsprop_range<T, decltype(F)::value>(s, b, e, gs); });
      break;
    case OptKind::SGD:
      with_flags<0, kMaximize, kWeightDecay, kMomentum, kNesterov, kFirstStep, kUnscale>(
          f, [&](auto F) { sgd_range<T, decltype(F)::value>(s, b, e, gs); });
      break;
    case OptKind::Adagrad:
      with_flags<0, kMaximize, kWeightDecay, kUnscale>(
          f, [&](auto F) { adagrad_range<T, decltype(F)::value>(s, b, e, gs); });
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
