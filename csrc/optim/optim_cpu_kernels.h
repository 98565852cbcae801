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

// Elements [b, e) of one tensor; F is a constant, so the loop body has no branches left. S: the
// state's storage type; SR: bf16 values rounded stochastically.
template <class T, class S, OptKind K, int F, bool SR>
void update_range(const OptSlot& s, int64_t b, int64_t e, const float* gs) {
  using C = compute_t<T>;
  const auto c = KindConsts<K, C>::make(s.k);
  const C scale = gs ? (C)*gs : C(1);
  T* __restrict p = (T*)s.param;
  const T* __restrict g = (const T*)s.grad;
  if constexpr (std::is_same<S, uint8_t>::value) {  // 8-bit state: whole blocks (b is block-aligned)
    uint8_t* const q[3] = {(uint8_t*)s.state[0], (uint8_t*)s.state[1], (uint8_t*)s.state[2]};
    float* const qs[3] = {s.qscale[0], s.qscale[1], s.qscale[2]};
    for (int64_t b0 = b; b0 < e; b0 += kQ8Block) {
      if constexpr (SR)
        update_block_q8<K, CpuIO>(F, c, p, g, q, qs, b0, imin(kQ8Block, e - b0), scale, StochasticStore{s.sr_key});
      else
        update_block_q8<K, CpuIO>(F, c, p, g, q, qs, b0, imin(kQ8Block, e - b0), scale);
    }
  } else {
    S* __restrict s0 = (S*)s.state[0];
    S* __restrict s1 = (S*)s.state[1];
    S* __restrict s2 = (S*)s.state[2];
    if constexpr (SR) {
      const StochasticStore st{s.sr_key};
      for (int64_t i = b; i < e; ++i) update_element<K, CpuIO>(F, c, p, g, s0, s1, s2, i, scale, st);
    } else {
      for (int64_t i = b; i < e; ++i) update_element<K, CpuIO>(F, c, p, g, s0, s1, s2, i, scale);
    }
  }
}

template <class T, class S, bool SR>
FASTNN_INLINE void run_range(OptKind kind, const OptSlot& s, int64_t b, int64_t e, const float* gs) {
  const int f = s.flags | (gs ? kUnscale : 0);
  switch (kind) {
    case OptKind::Adam:
      with_flags<0, kMaximize, kWeightDecay, kAmsgrad, kDecoupled, kUnscale>(
          f, [&](auto F) { update_range<T, S, OptKind::Adam, decltype(F)::value, SR>(s, b, e, gs); });
      break;
    case OptKind::RMSprop:
      with_flags<0, kMaximize, kWeightDecay, kCentered, kMomentum, kUnscale>(
          f, [&](auto F) { update_range<T, S, OptKind::RMSprop, decltype(F)::value, SR>(s, b, e, gs); });
      break;
    case OptKind::SGD:
      with_flags<0, kMaximize, kWeightDecay, kMomentum, kNesterov, kFirstStep, kUnscale>(
          f, [&](auto F) { update_range<T, S, OptKind::SGD, decltype(F)::value, SR>(s, b, e, gs); });
      break;
    case OptKind::Adagrad:
      with_flags<0, kMaximize, kWeightDecay, kUnscale>(
          f, [&](auto F) { update_range<T, S, OptKind::Adagrad, decltype(F)::value, SR>(s, b, e, gs); });
      break;
  }
}

template <class A, class B> constexpr bool kSameType = false;
template <class A> constexpr bool kSameType<A, A> = true;
// The (parameter, state) storage pairs the launcher runs: torch's (state like the parameter), and
// the compact ones, bf16 state of float32 parameters and float32 state of bf16 parameters.
template <class T, class S>
constexpr bool kStatePair = kSameType<T, S> || (kSameType<T, float> && kSameType<S, bf16_t>) ||
                            (kSameType<T, bf16_t> && kSameType<S, float>);
template <class T, class S> constexpr bool kAnyBf16 = kSameType<T, bf16_t> || kSameType<S, bf16_t>;

template <class T, class S, bool SR>
void step_typed(OptKind kind, const OptSlot* slots, int64_t nslots, const float* gs) {
  // 8-bit state: each tensor padded to whole blocks in the index space split below, and split
  // points on block boundaries, so every block is one thread's (and its scale written once).
  constexpr int64_t kAlign = std::is_same<S, uint8_t>::value ? kQ8Block : 64;
  Scratch<int64_t> start(nslots + 1);  // prefix sums of numel (padded)
  for (int64_t i = 0; i < nslots; ++i) start[i + 1] = start[i] + (slots[i].numel + kAlign - 1) / kAlign * kAlign;
  const int64_t total = start[nslots];
  const int nt = total >= kParallelMinElems ? omp_get_max_threads() : 1;
#pragma omp parallel num_threads(nt)
  {
    const int64_t t = omp_get_thread_num(), T_ = omp_get_num_threads();
    // Split points rounded to 64 elements so no two threads write into one cache line.
    const int64_t lo = t == 0 ? 0 : (total * t / T_) & ~(kAlign - 1);
    const int64_t hi = t == T_ - 1 ? total : (total * (t + 1) / T_) & ~(kAlign - 1);
    int64_t a = 0, z = nslots;  // first slot whose range ends after lo
    while (a < z) {
      int64_t mid = (a + z) / 2;
      if (start[mid + 1] <= lo) a = mid + 1; else z = mid;
    }
    for (int64_t i = a; i < nslots && start[i] < hi; ++i) {
      const int64_t b = imax(lo, start[i]) - start[i];
      const int64_t e = imin(imin(hi, start[i + 1]) - start[i], slots[i].numel);
      if (b < e) run_range<T, S, SR>(kind, slots[i], b, e, gs);
    }
  }
}

// sdtype: the state's storage (a pair kStatePair allows; the wrapper checks); sr: stochastic
// rounding of bf16 stores (only where something is bf16).
inline void step(OptKind kind, DType dtype, DType sdtype, bool sr, const OptSlot* slots, int64_t nslots,
                 const float* gs) {
  dispatch_dtype(dtype, [&](auto ptag) {
    dispatch_dtype(sdtype, [&](auto stag) {
      using T = decltype(ptag);
      using S = decltype(stag);
      if constexpr (kStatePair<T, S>) {
        if constexpr (kAnyBf16<T, S>) {
          if (sr) return step_typed<T, S, true>(kind, slots, nslots, gs);
        }
        step_typed<T, S, false>(kind, slots, nslots, gs);
      }
    });
  });
}

// 8-bit block-wise state of float32 or bf16 parameters (OptSlot::qscale holds the block scales).
inline void step_q8(OptKind kind, DType dtype, bool sr, const OptSlot* slots, int64_t nslots, const float* gs) {
  if (dtype == DType::F32) {
    step_typed<float, uint8_t, false>(kind, slots, nslots, gs);
  } else if (dtype == DType::BF16) {
    if (sr) step_typed<bf16_t, uint8_t, true>(kind, slots, nslots, gs);
    else step_typed<bf16_t, uint8_t, false>(kind, slots, nslots, gs);
  }
}

inline const OptimCpuKernels& table() {
  static const OptimCpuKernels t{step, step_q8};
  return t;
}

}  // namespace optim_cpu
}  // namespace FASTNN_ISA_NS
}  // namespace fastnn

#pragma GCC pop_options
