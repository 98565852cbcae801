// The one table of activation functors, shared by every CPU and CUDA kernel.
//
// Each functor has value(z) and grad(s), where s is what the forward pass saved for backward:
// the output y when the derivative is a function of y (identity, relu, leaky_relu with slope > 0,
// sigmoid, tanh) -- then a layer keeps a single activation-sized tensor -- otherwise the
// pre-activation z. C is the compute type (float for float/bf16/half storage, double for double).
#pragma once
#include "fastmath.h"

namespace fastnn {

// Stable integer codes: they cross the C++/CUDA boundary as plain ints.
enum class Act : int {
  Identity = 0,
  Relu = 1,
  LeakyRelu = 2,
  Sigmoid = 3,
  Tanh = 4,
  Gelu = 5,
  GeluTanh = 6,
  Silu = 7,
  Softplus = 8,
};
constexpr int kNumActs = 9;

inline namespace FASTNN_ISA_NS {

// Whether backward reads the output (true) or the pre-activation (false).
FASTNN_HD inline bool act_saves_output(Act a, double negative_slope) {
  switch (a) {
    case Act::Identity: case Act::Relu: case Act::Sigmoid: case Act::Tanh: return true;
    case Act::LeakyRelu: return negative_slope > 0;
    default: return false;
  }
}

template <Act A> struct ActFn;

template <> struct ActFn<Act::Identity> {
  template <class C> FASTNN_INLINE FASTNN_HD static C value(C z, C) { return z; }
  template <class C> FASTNN_INLINE FASTNN_HD static C grad(C, C) { return C(1); }
};
template <> struct ActFn<Act::Relu> {
  template <class C> FASTNN_INLINE FASTNN_HD static C value(C z, C) { return z > C(0) ? z : (z == z ? C(0) : z); }
  template <class C> FASTNN_INLINE FASTNN_HD static C grad(C y, C) { return y > C(0) ? C(1) : C(0); }
};
// Saved tensor is y when slope > 0 (sign(y) == sign(z)), else z: the same test works on both.
template <> struct ActFn<Act::LeakyRelu> {
  template <class C> FASTNN_INLINE FASTNN_HD static C value(C z, C slope) { return z > C(0) ? z : z * slope; }
  template <class C> FASTNN_INLINE FASTNN_HD static C grad(C s, C slope) { return s > C(0) ? C(1) : slope; }
};
template <> struct ActFn<Act::Sigmoid> {
  template <class C> FASTNN_INLINE FASTNN_HD static C value(C z, C) { return fm::sigmoid(z); }
  template <class C> FASTNN_INLINE FASTNN_HD static C grad(C y, C) { return y * (C(1) - y); }
};
template <> struct ActFn<Act::Tanh> {
  template <class C> FASTNN_INLINE FASTNN_HD static C value(C z, C) { return fm::tanh(z); }
  template <class C> FASTNN_INLINE FASTNN_HD static C grad(C y, C) { return C(1) - y * y; }
};
template <> struct ActFn<Act::Gelu> {  // exact: z * Phi(z)
  template <class C> FASTNN_INLINE FASTNN_HD static C value(C z, C) { return z * fm::normcdf(z); }
  template <class C> FASTNN_INLINE FASTNN_HD static C grad(C z, C) {
    C pdf;
    C cdf = fm::normcdf_pdf(z, pdf);
    return cdf + z * pdf;
  }
};
// 0.5 z (1 + tanh(u)) with u = sqrt(2/pi) (z + 0.044715 z^3), computed as z * sigmoid(2u): the same
// function, without the cancellation of 1 + tanh(u) for negative z.
template <> struct ActFn<Act::GeluTanh> {
  template <class C> FASTNN_INLINE FASTNN_HD static C value(C z, C) {
    const C k2 = C(1.5957691216057307118), a = C(0.044715);  // 2 sqrt(2/pi)
    return z * fm::sigmoid(k2 * (z + a * z * z * z));
  }
  template <class C> FASTNN_INLINE FASTNN_HD static C grad(C z, C) {
    const C k2 = C(1.5957691216057307118), a = C(0.044715);
    C s = fm::sigmoid(k2 * (z + a * z * z * z));
    return s + z * s * (C(1) - s) * k2 * (C(1) + C(3) * a * z * z);
  }
};
template <> struct ActFn<Act::Silu> {
  template <class C> FASTNN_INLINE FASTNN_HD static C value(C z, C) { return z * fm::sigmoid(z); }
  template <class C> FASTNN_INLINE FASTNN_HD static C grad(C z, C) {
    C s = fm::sigmoid(z);
    return s * (C(1) + z * (C(1) - s));
  }
};
// torch's defaults: beta = 1, threshold = 20 (linear above it).
template <> struct ActFn<Act::Softplus> {
  template <class C> FASTNN_INLINE FASTNN_HD static C value(C z, C) {
    C zc = z > C(20) ? C(20) : z;  // keeps exp finite on the branch that is not taken
    C soft = fm::log1p(fm::exp(zc));
    return z > C(20) ? z : soft;
  }
  template <class C> FASTNN_INLINE FASTNN_HD static C grad(C z, C) {
    return z > C(20) ? C(1) : fm::sigmoid(z);
  }
};

#if defined(__CUDACC__)
// The forward value when the result is stored as T on CUDA. For 16-bit storage GELU takes torch's
// own form, z/2 (1 + erf(z/sqrt2)): about half the instructions of normcdff, which keeps the bf16
// epilogue pass memory-bound (its loss of relative accuracy below z = -4 is torch's too).
template <Act A, class T, class C>
__device__ FASTNN_INLINE C act_value_for(C z, C slope) {
  if constexpr (A == Act::Gelu && sizeof(T) == 2) return 0.5f * z * (1.f + erff(z * 0.70710678118654752f));
  else return ActFn<A>::value(z, slope);
}
#endif

// Calls f(std::integral_constant<Act, A>{}) for the runtime code a: one switch, outside the loops.
template <Act A> struct ActTag { static constexpr Act value = A; };
template <class F>
FASTNN_HD inline void dispatch_act(Act a, F&& f) {
  switch (a) {
    case Act::Identity: f(ActTag<Act::Identity>{}); break;
    case Act::Relu: f(ActTag<Act::Relu>{}); break;
    case Act::LeakyRelu: f(ActTag<Act::LeakyRelu>{}); break;
    case Act::Sigmoid: f(ActTag<Act::Sigmoid>{}); break;
    case Act::Tanh: f(ActTag<Act::Tanh>{}); break;
    case Act::Gelu: f(ActTag<Act::Gelu>{}); break;
    case Act::GeluTanh: f(ActTag<Act::GeluTanh>{}); break;
    case Act::Silu: f(ActTag<Act::Silu>{}); break;
    case Act::Softplus: f(ActTag<Act::Softplus>{}); break;
  }
}

}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
