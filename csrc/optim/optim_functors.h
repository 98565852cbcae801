// Per-element update rules of the fused optimizers, shared by the CPU and CUDA launchers.
//
// Each rule repeats torch.optim's single-tensor (foreach=False) arithmetic operation by operation,
// including where ATen's kernels fuse a multiply-add (add with alpha, addcmul and lerp are fma;
// addcdiv is not), so float64 trajectories agree with torch bit for bit (Adam's division by the bias
// correction takes another route to the same correctly rounded quotient: div_by_const). Scalars
// arrive already rounded to the compute type, as ATen rounds a Python scalar argument.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include "../common/hd.h"

namespace fastnn {

enum class OptKind : int { Adam = 0, RMSprop = 1, SGD = 2, Adagrad = 3 };

// Flag bits of a tensor slot.
enum OptFlag : int {
  kMaximize = 1,
  kWeightDecay = 2,   // weight_decay != 0 (torch skips the term entirely when it is 0)
  kAmsgrad = 4,       // Adam
  kDecoupled = 8,     // Adam: AdamW's decoupled weight decay
  kCentered = 16,     // RMSprop
  kMomentum = 32,     // RMSprop, SGD: momentum != 0
  kNesterov = 64,     // SGD
  kFirstStep = 128,   // SGD: the momentum buffer is initialised with the gradient
  kUnscale = 256,     // gradients are divided by GradScaler's scale in the same pass
};

inline namespace FASTNN_ISA_NS {
namespace optim_rules {

template <class C> FASTNN_INLINE FASTNN_HD C fma_(C a, C b, C c);
template <> FASTNN_INLINE FASTNN_HD float fma_<float>(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return __builtin_fmaf(a, b, c);
#endif
}
template <> FASTNN_INLINE FASTNN_HD double fma_<double>(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
  return __fma_rn(a, b, c);
#else
  return __builtin_fma(a, b, c);
#endif
}
template <class C> FASTNN_INLINE FASTNN_HD C sqrt_(C x) {
#if defined(__CUDA_ARCH__)
  return ::sqrt(x);
#else
  return __builtin_sqrt(x);
#endif
}
template <> FASTNN_INLINE FASTNN_HD float sqrt_<float>(float x) {
#if defined(__CUDA_ARCH__)
  return ::sqrtf(x);
#else
  return __builtin_sqrtf(x);
#endif
}

// RN(a / b) for a divisor fixed for a whole tensor, given nb = RN(-1 / b): q0 = RN(a / b) within an
// ulp, the remainder r = q0 b - a exact by one fma, and q0 - r / b rounded once is RN(a / b)
// (Markstein's theorem; it needs no overflow or underflow, which Adam's a = sqrt(v) in [2^-75, 2^64]
// and b = sqrt(1 - beta2^t) in (0, 1] rule out; benchmarks/adam_div_check.cpp checks every float a
// against the division). Three multiply-adds in place of a division: the divider is most of the
// 8-bit Adam step's time on the CPU. a = inf or NaN makes r NaN, and q0 is then the quotient; the
// signs of fma(q0, b, -a) and fma(r, nb, q0) keep a = -0's quotient -0.
template <class C> FASTNN_INLINE FASTNN_HD C div_by_const(C a, C b, C nb) {
  const C q0 = a * -nb;
  const C r = fma_(q0, b, -a);
  const C q = fma_(r, nb, q0);
  return r != r ? q0 : q;
}

// v with its sign bit flipped where sign's is set (sign is +0 or -0): -v or v, NaNs too, with one
// xor and no branch: the CPU kernels' run-time maximize (optim_cpu_kernels.h, kMaximizeFlag).
template <class C> FASTNN_INLINE FASTNN_HD C xor_sign(C v, C sign) {
  using U = std::conditional_t<sizeof(C) == 4, uint32_t, uint64_t>;
  U a, b;
  memcpy(&a, &v, sizeof(C));
  memcpy(&b, &sign, sizeof(C));
  a ^= b;
  memcpy(&v, &a, sizeof(C));
  return v;
}

// torch.lerp(start, end, w): two forms, chosen by |w| < 0.5, both fused: fma(w, d, s) or
// fma(-d, 1 - w, e), written as one fma whose factor and addend are chosen, so vectorized loops
// blend one operand instead of computing both forms (the same products, so the same bits).
template <class C> FASTNN_INLINE FASTNN_HD C lerp(C s, C e, C w, C one_minus_w, bool small) {
  const C d = e - s;
  return fma_(small ? w : -one_minus_w, d, small ? s : e);
}

// Constants of one tensor's update, computed once per step in double and rounded to C.
template <class C> struct AdamConsts {
  C wd, decay_keep;       // L2 weight decay, or AdamW's (1 - lr * wd)
  C w1, one_minus_w1;     // lerp weight 1 - beta1
  bool w1_small;
  C beta2, omb2;          // beta2, 1 - beta2
  C bc2_sqrt, neg_inv_bc2_sqrt, eps, neg_step_size;  // neg_inv_bc2_sqrt = RN(-1 / bc2_sqrt)
};

// F: OptFlag bits; a compile-time constant on the CPU (branches fold away), per tensor on the GPU.
template <class C>
FASTNN_INLINE FASTNN_HD void adam(const int F, const AdamConsts<C>& k, C& p, C g, C& m, C& v, C& vmax) {
  if (F & kMaximize) g = -g;
  if (F & kWeightDecay) {
    if (F & kDecoupled) p = p * k.decay_keep;
    else g = fma_(k.wd, p, g);
  }
  m = lerp(m, g, k.w1, k.one_minus_w1, k.w1_small);
  v = v * k.beta2;
  v = fma_(k.omb2 * g, g, v);
  C u = v;
  if (F & kAmsgrad) {
    vmax = vmax > v ? vmax : (vmax != vmax ? vmax : v);  // torch.maximum propagates NaN
    u = vmax;
  }
  C denom = div_by_const(sqrt_(u), k.bc2_sqrt, k.neg_inv_bc2_sqrt) + k.eps;  // = sqrt(u) / bc2_sqrt + eps
  p = p + (k.neg_step_size * m) / denom;
}

template <class C> struct RmspropConsts {
  C wd, alpha, oma, w, one_minus_w;  // oma = 1 - alpha = lerp weight of grad_avg
  bool w_small;
  C eps, momentum, neg_lr;
};

template <class C>
FASTNN_INLINE FASTNN_HD void rmsprop(const int F, const RmspropConsts<C>& k, C& p, C g, C& sq, C& gavg, C& buf) {
  if (F & kMaximize) g = -g;
  if (F & kWeightDecay) g = fma_(k.wd, p, g);
  sq = sq * k.alpha;
  sq = fma_(k.oma * g, g, sq);
  C avg;
  if (F & kCentered) {
    gavg = lerp(gavg, g, k.w, k.one_minus_w, k.w_small);
    avg = sqrt_(fma_(C(-1) * gavg, gavg, sq));
  } else {
    avg = sqrt_(sq);
  }
  avg = avg + k.eps;
  if (F & kMomentum) {
    buf = buf * k.momentum;
    buf = buf + (C(1) * g) / avg;
    p = fma_(k.neg_lr, buf, p);
  } else {
    p = p + (k.neg_lr * g) / avg;
  }
}

template <class C> struct SgdConsts {
  C wd, momentum, one_minus_dampening, neg_lr;
};

template <class C>
FASTNN_INLINE FASTNN_HD void sgd(const int F, const SgdConsts<C>& k, C& p, C g, C& buf) {
  if (F & kMaximize) g = -g;
  if (F & kWeightDecay) g = fma_(k.wd, p, g);
  if (F & kMomentum) {
    if (F & kFirstStep) {
      buf = g;
    } else {
      buf = buf * k.momentum;
      buf = fma_(k.one_minus_dampening, g, buf);
    }
    g = (F & kNesterov) ? fma_(k.momentum, buf, g) : buf;
  }
  p = fma_(k.neg_lr, g, p);
}

template <class C> struct AdagradConsts {
  C wd, eps, neg_clr;
};

template <class C>
FASTNN_INLINE FASTNN_HD void adagrad(const int F, const AdagradConsts<C>& k, C& p, C g, C& sum) {
  if (F & kMaximize) g = -g;
  if (F & kWeightDecay) g = fma_(k.wd, p, g);
  sum = fma_(C(1) * g, g, sum);
  C stdv = sqrt_(sum) + k.eps;
  p = p + (k.neg_clr * g) / stdv;
}

// The per-tensor constants k[8] of a step from the group's hyper-parameters h/b (layout in optim.h)
// and the tensor's step count after its increment; double, as torch computes them.
//   Adam    k = wd, 1 - lr wd, 1 - beta1, beta2, 1 - beta2, sqrt(1 - beta2^t), eps, -lr / (1 - beta1^t)
//   RMSprop k = wd, alpha, 1 - alpha, eps, momentum, -lr
//   SGD     k = wd, momentum, 1 - dampening, -lr
//   Adagrad k = wd, eps, -lr / (1 + (t - 1) lr_decay)
// A float32 lr tensor (b[2] for Adam, b[1] for Adagrad) makes torch do the lr arithmetic in
// float32; so does this.
FASTNN_INLINE FASTNN_HD void make_consts(OptKind kind, const double* h, const bool* b, double step, double* k) {
  const double lr = h[0];
  switch (kind) {
    case OptKind::Adam: {
      const double beta1 = h[1], beta2 = h[2], wd = h[3];
      const double bc1 = 1 - ::pow(beta1, step), bc2 = 1 - ::pow(beta2, step);
      double step_size = lr / bc1, decay_keep = 1 - lr * wd;
      if (b[2]) {
        step_size = double(float(lr) / float(bc1));
        decay_keep = double(1.f - float(lr) * float(wd));
      }
      k[0] = wd; k[1] = decay_keep; k[2] = 1 - beta1; k[3] = beta2; k[4] = 1 - beta2;
      k[5] = ::pow(bc2, 0.5); k[6] = h[4]; k[7] = -step_size;
      break;
    }
    case OptKind::RMSprop:
      k[0] = h[3]; k[1] = h[1]; k[2] = 1 - h[1]; k[3] = h[2]; k[4] = h[4]; k[5] = -lr;
      break;
    case OptKind::SGD:
      k[0] = h[3]; k[1] = h[1]; k[2] = 1 - h[2]; k[3] = -lr;
      break;
    case OptKind::Adagrad: {
      const double denom = 1 + (step - 1) * h[1];
      const double clr = b[1] ? double(float(lr) / float(denom)) : lr / denom;
      k[0] = h[2]; k[1] = h[3]; k[2] = -clr;
      break;
    }
  }
}

// Rounds k to the compute type as ATen rounds a Python scalar, and fills the rule's constants.
template <class C> FASTNN_INLINE FASTNN_HD AdamConsts<C> adam_consts(const double* k) {
  AdamConsts<C> c;
  c.wd = (C)k[0]; c.decay_keep = (C)k[1]; c.w1 = (C)k[2]; c.one_minus_w1 = C(1) - c.w1;
  c.w1_small = (c.w1 < 0 ? -c.w1 : c.w1) < C(0.5);
  c.beta2 = (C)k[3]; c.omb2 = (C)k[4]; c.bc2_sqrt = (C)k[5]; c.eps = (C)k[6];
  c.neg_inv_bc2_sqrt = C(-1) / c.bc2_sqrt; c.neg_step_size = (C)k[7];
  return c;
}
template <class C> FASTNN_INLINE FASTNN_HD RmspropConsts<C> rmsprop_consts(const double* k) {
  RmspropConsts<C> c;
  c.wd = (C)k[0]; c.alpha = (C)k[1]; c.oma = (C)k[2]; c.w = c.oma; c.one_minus_w = C(1) - c.w;
  c.w_small = (c.w < 0 ? -c.w : c.w) < C(0.5);
  c.eps = (C)k[3]; c.momentum = (C)k[4]; c.neg_lr = (C)k[5];
  return c;
}
template <class C> FASTNN_INLINE FASTNN_HD SgdConsts<C> sgd_consts(const double* k) {
  SgdConsts<C> c;
  c.wd = (C)k[0]; c.momentum = (C)k[1]; c.one_minus_dampening = (C)k[2]; c.neg_lr = (C)k[3];
  return c;
}
template <class C> FASTNN_INLINE FASTNN_HD AdagradConsts<C> adagrad_consts(const double* k) {
  AdagradConsts<C> c;
  c.wd = (C)k[0]; c.eps = (C)k[1]; c.neg_clr = (C)k[2];
  return c;
}

template <OptKind K, class C> struct KindConsts;
template <class C> struct KindConsts<OptKind::Adam, C> {
  static FASTNN_INLINE FASTNN_HD AdamConsts<C> make(const double* k) { return adam_consts<C>(k); }
};
template <class C> struct KindConsts<OptKind::RMSprop, C> {
  static FASTNN_INLINE FASTNN_HD RmspropConsts<C> make(const double* k) { return rmsprop_consts<C>(k); }
};
template <class C> struct KindConsts<OptKind::SGD, C> {
  static FASTNN_INLINE FASTNN_HD SgdConsts<C> make(const double* k) { return sgd_consts<C>(k); }
};
template <class C> struct KindConsts<OptKind::Adagrad, C> {
  static FASTNN_INLINE FASTNN_HD AdagradConsts<C> make(const double* k) { return adagrad_consts<C>(k); }
};

// f(std::integral_constant<OptKind, K>) for the kind named at run time (the launchers' dispatch).
template <class F> FASTNN_INLINE void with_kind(OptKind kind, F&& f) {
  switch (kind) {
    case OptKind::Adam: return f(std::integral_constant<OptKind, OptKind::Adam>{});
    case OptKind::RMSprop: return f(std::integral_constant<OptKind, OptKind::RMSprop>{});
    case OptKind::SGD: return f(std::integral_constant<OptKind, OptKind::SGD>{});
    case OptKind::Adagrad: return f(std::integral_constant<OptKind, OptKind::Adagrad>{});
  }
}

// Which of a kind's three state tensors an update reads and writes under flags F (states a kind or
// its flags do not use are never touched and may be null).
template <OptKind K> FASTNN_INLINE FASTNN_HD bool writes_state(const int F, int s) {
  if constexpr (K == OptKind::Adam) return s < 2 || (s == 2 && (F & kAmsgrad));
  else if constexpr (K == OptKind::RMSprop) return s == 0 || (s == 1 && (F & kCentered)) || (s == 2 && (F & kMomentum));
  else if constexpr (K == OptKind::SGD) return s == 0 && (F & kMomentum);
  else return s == 0;
}
template <OptKind K> FASTNN_INLINE FASTNN_HD bool reads_state(const int F, int s) {
  if constexpr (K == OptKind::SGD) return s == 0 && (F & kMomentum) && !(F & kFirstStep);
  else return writes_state<K>(F, s);
}

// The rule of kind K on one element held in the compute type: parameter p, gradient g (already
// unscaled), states s0..s2 (zero where reads_state is false).
template <OptKind K, class Consts, class C>
FASTNN_INLINE FASTNN_HD void apply_rule(const int F, const Consts& c, C& p, C g, C& s0, C& s1, C& s2) {
  if constexpr (K == OptKind::Adam) adam(F, c, p, g, s0, s1, s2);
  else if constexpr (K == OptKind::RMSprop) rmsprop(F, c, p, g, s0, s1, s2);
  else if constexpr (K == OptKind::SGD) sgd(F, c, p, g, s0);
  else adagrad(F, c, p, g, s0);
}

// ---- stochastic rounding: counter-based random bits ----
// Each tensor's key mixes (seed, step, parameter index) on the host (splitmix64's output function);
// element i then draws 32-bit hashes of key + i, so the bits depend on nothing else (not the thread,
// block or device): any thread count or backend rounds alike. 32-bit hashes, computed only for the
// stores that use them: 64-bit multiplies made the rounding cost more than the bytes it saves.
FASTNN_INLINE FASTNN_HD uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
FASTNN_INLINE FASTNN_HD uint64_t sr_tensor_key(uint64_t seed, uint64_t step, uint64_t param_index) {
  return mix64(mix64(mix64(seed) + step * kGolden) + param_index * kGolden);
}
// A 32-bit bijection with full avalanche (two multiply-xorshift rounds).
FASTNN_INLINE FASTNN_HD uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  return x ^ (x >> 16);
}

// How the update stores a value: to nearest, or (Stochastic) bf16 values rounded stochastically with
// 16 random bits each: state 0 and 1 from the element's first hash, the parameter and state 2 from
// its second. q8_add: what an 8-bit code's encoding adds below the 20-bit shift (q8_encode_mag):
// half a code step (nearest), or the state's 16 random bits in bits 4-19 plus 8, the missing
// bits' mean (stochastic rounding between the two nearest codes).
constexpr uint32_t kQ8HalfStep = 0x80000u;
struct NearestStore {
  FASTNN_INLINE FASTNN_HD void at(int64_t) {}
  template <class IO, class T, class C> FASTNN_INLINE FASTNN_HD T store(C v, int) const {
    return IO::template st<T>(v);
  }
  FASTNN_INLINE FASTNN_HD uint32_t q8_add(int) const { return kQ8HalfStep; }
};
// The element's hash input: key + i, whose top half folded in. Among elements with the same
// i >> 32 it steps by one with i, so a run from i0 counts sr_counter(key, i0) + j
// (StochasticRunStore, q8_random_adds).
FASTNN_INLINE FASTNN_HD uint32_t sr_counter(uint64_t key, int64_t i) {
  return uint32_t(key) + uint32_t(uint64_t(i) >> 32) * 0x9E3779B9u + uint32_t(i);
}
// The 16 random bits of store `which` (0 the parameter, 1 + s state s) of the element whose
// counter is x: states 0 and 1 halves of hash32(x), the parameter and state 2 of the second hash.
FASTNN_INLINE FASTNN_HD int sr_draw(int which) { return which == 0 ? 2 : which - 1; }
FASTNN_INLINE FASTNN_HD uint32_t sr_hash(uint32_t x, uint64_t key, int which) {
  return sr_draw(which) < 2 ? hash32(x) : hash32(x ^ uint32_t(key >> 32));
}
FASTNN_INLINE FASTNN_HD uint32_t sr_bits16(uint32_t h, int which) { return (sr_draw(which) & 1 ? h >> 16 : h) & 0xffffu; }
FASTNN_INLINE FASTNN_HD uint32_t sr_q8_add(uint32_t bits16) { return (bits16 << 4) | 8u; }
struct StochasticStore {
  uint64_t key;
  uint32_t x = 0;
  FASTNN_INLINE FASTNN_HD void at(int64_t i) { x = sr_counter(key, i); }
  FASTNN_INLINE FASTNN_HD uint32_t bits16(int which) const { return sr_bits16(sr_hash(x, key, which), which); }
  template <class IO, class T, class C> FASTNN_INLINE FASTNN_HD T store(C v, int which) const {
    return IO::template st_stochastic<T>(v, bits16(which));
  }
  FASTNN_INLINE FASTNN_HD uint32_t q8_add(int which) const { return sr_q8_add(bits16(which)); }
};
// StochasticStore for a run of elements i0 + j that share i0 >> 32, indexed by j: base = the
// counter of i0, so a CPU loop's counter is a 32-bit induction variable.
struct StochasticRunStore : StochasticStore {
  uint32_t base;
  FASTNN_INLINE FASTNN_HD void at(int64_t j) { x = base + uint32_t(j); }
};
// The store of an update: stochastic (bf16 values, random bits keyed by key) or to nearest.
template <bool SR> FASTNN_INLINE FASTNN_HD auto make_store(uint64_t key) {
  if constexpr (SR) return StochasticStore{key};
  else return NearestStore{};
}
// The same for the run of elements i0 + j (j from 0) whose i >> 32 is that of i0; at(j).
template <bool SR> FASTNN_INLINE FASTNN_HD auto make_run_store(uint64_t key, int64_t i0) {
  if constexpr (SR) return StochasticRunStore{{key}, sr_counter(key, i0)};
  else return NearestStore{};
}

// One element of one tensor (the CPU launcher, and the CUDA launcher's unaligned head and tail):
// load (IO::ld, in the compute type C), apply the rule, store back (Store: to nearest by default).
// gsign: -0 negates the gradient (the CPU's maximize, which leaves kMaximize out of F).
// State may be stored in another type S than the parameter's T (compact state: bf16 state of
// float32 parameters, or float32 state of bf16 ones); the rule always runs in C.
template <OptKind K, class IO, class T, class S, class Consts, class C, class Store = NearestStore>
FASTNN_INLINE FASTNN_HD void update_element(const int F, const Consts& c, T* __restrict p, const T* __restrict g,
                                            S* __restrict s0, S* __restrict s1, S* __restrict s2, int64_t i,
                                            C scale, Store st = Store(), C gsign = C(0)) {
  st.at(i);
  S* sp[3] = {s0, s1, s2};
  C pp = IO::ld(p[i]);
  C gg = xor_sign((F & kUnscale) ? IO::ld(g[i]) / scale : IO::ld(g[i]), gsign);
  C v[3];
FASTNN_UNROLL
  for (int s = 0; s < 3; ++s) v[s] = reads_state<K>(F, s) ? C(IO::ld(sp[s][i])) : C(0);
  apply_rule<K>(F, c, pp, gg, v[0], v[1], v[2]);
FASTNN_UNROLL
  for (int s = 0; s < 3; ++s)
    if (writes_state<K>(F, s)) sp[s][i] = st.template store<IO, S>(v[s], 1 + s);
  p[i] = st.template store<IO, T>(pp, 0);
}

// ---- block-wise 8-bit state ----
// A state tensor of n values is n uint8 codes plus one float32 scale per block of kQ8Block values
// (blocks over the row-major element order): value = scale * code_value(code). A code is a small
// float relative to the block's largest finite magnitude, which the scale maps to the top code:
//   signed states (first moments, momentum): sign + E4M3 (4 exponent bits, 3 mantissa bits,
//     subnormals below 2^-14; top 1.875); 0x80 (a negative zero) is NaN.
//   unsigned states (second moments, Adagrad sums): E5M3 (subnormals below 2^-30; top 1.75);
//     0xFF is NaN. Five exponent bits: sqrt(v) divides the update, so a v that flushed to zero
//     while its m did not would blow the update up; E5M3 keeps v down to 2^-33 of the block max.
// A code's bits are those of the float32 x' = code value * 2^(Emax-127) shifted right by 20 (its
// exponent and top 3 mantissa bits; subnormal codes are float32 subnormals there). Encoding rounds
// x' = |v| / scale * 2^(Emax-127) once to float32, its subnormals included, then to the code's 3
// mantissa bits to nearest, a tie up in magnitude (one add before the shift). That definition lets
// the CPU encode and decode blocks without subnormal codes with one multiply a value (q8_*_sub in
// optim_cpu_kernels.h), and the normal-float form below (every other block, CUDA, the host) give
// the same bits.
constexpr int64_t kQ8Block = 256;

FASTNN_INLINE FASTNN_HD uint32_t q8_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  return __builtin_bit_cast(uint32_t, f);
#endif
}
FASTNN_INLINE FASTNN_HD float q8_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  return __builtin_bit_cast(float, u);
#endif
}

template <bool Signed> struct Q8Code;
// kToSub = 2^(Emax-127): x to x'; kScaleMax = 2^(Emax+1): scales below it times 1 / kToSub are finite.
template <> struct Q8Code<true> {
  static constexpr uint32_t kEmax = 15, kTop = 0x7F, kNan = 0x80;
  static constexpr float kTopValue = 1.875f, kNormalMin = 0x1p-14f, kSubQuantum = 0x1p-17f;
  static constexpr float kToSub = 0x1p-112f, kFromSub = 0x1p112f, kScaleMax = 0x1p16f;
};
template <> struct Q8Code<false> {
  static constexpr uint32_t kEmax = 31, kTop = 0xFE, kNan = 0xFF;
  static constexpr float kTopValue = 1.75f, kNormalMin = 0x1p-30f, kSubQuantum = 0x1p-33f;
  static constexpr float kToSub = 0x1p-96f, kFromSub = 0x1p96f, kScaleMax = 0x1p32f;
};

// The value of a code relative to its block's scale.
template <bool Signed> FASTNN_INLINE FASTNN_HD float q8_decode(uint32_t c) {
  using Q = Q8Code<Signed>;
  const uint32_t mag = Signed ? (c & 0x7Fu) : c;
  const uint32_t e = mag >> 3, m = mag & 7u;
  float v = e ? q8_float(((e + 127u - Q::kEmax) << 23) | (m << 20)) : float(m) * Q::kSubQuantum;
  if (Signed && (c & 0x80u)) v = -v;
  return c == Q::kNan ? q8_float(0x7FC00000u) : v;
}

// The code of a finite magnitude a (|v|) times inv (1 / scale; x = a inv), rounded as above, at most
// the top code, with normal floats only: x' = x 2^(Emax-127) is exact where it is normal; below
// (x < 2^(1-Emax)), fma(a, inv, 2^(1-Emax)) rounds the exact a inv to multiples of that constant's
// ulp, which is x''s subnormal quantum scaled by 2^(127-Emax): the subnormal product's rounding.
// add: kQ8HalfStep (to nearest) or a stochastic store's q8_add; x''s bits are clamped to the top
// code's first, so no random add carries past it (to nearest, the same codes as clamping after).
template <bool Signed> FASTNN_INLINE FASTNN_HD uint32_t q8_encode_mag(float a, float inv, uint32_t add = kQ8HalfStep) {
  using Q = Q8Code<Signed>;
  const float x = a * inv;
  const uint32_t normal = q8_bits(x) - ((127u - Q::kEmax) << 23);                    // x''s bits, x' normal
  const uint32_t sub = q8_bits(fma_(a, inv, Q::kNormalMin)) - q8_bits(Q::kNormalMin);  // x''s bits, subnormal
  uint32_t xb = x < Q::kNormalMin ? sub : normal;
  xb = xb < (Q::kTop << 20) ? xb : (Q::kTop << 20);
  return (xb + add) >> 20;
}

// The code of value v whose magnitude is a (a inv relative to its block's scale).
template <bool Signed> FASTNN_INLINE FASTNN_HD uint8_t q8_encode(float v, float a, float inv, uint32_t add = kQ8HalfStep) {
  if (!(v - v == 0.f)) return uint8_t(Q8Code<Signed>::kNan);  // NaN or inf
  uint32_t c = q8_encode_mag<Signed>(a, inv, add);
  if (Signed && v < 0.f && c != 0) c |= 0x80u;
  return uint8_t(c);
}

// One step of a block's largest finite magnitude, kept as the largest bit pattern of |v| at most
// FLT_MAX's (non-negative floats order as their bits; NaN and inf fall above): an integer maximum,
// which vectorizes, where a float select chain would not (it bounded the whole 8-bit step).
FASTNN_INLINE FASTNN_HD uint32_t q8_amax_step(uint32_t amax_bits, float v) {
  const uint32_t b = q8_bits(v) & 0x7FFFFFFFu;
  const uint32_t k = b & (0u - uint32_t(b <= 0x7F7FFFFFu));  // a mask, not a select: GCC vectorizes
  return k > amax_bits ? k : amax_bits;                       // only an unconditional maximum
}

// The largest bit pattern of |v| so far, NaN and inf included: one unconditional integer maximum
// per value (half the vector ops of q8_amax_step), for loops that finish with q8_finite_amax.
FASTNN_INLINE FASTNN_HD uint32_t q8_abs_bits_max(uint32_t a, float v) {
  const uint32_t b = q8_bits(v) & 0x7FFFFFFFu;
  return b > a ? b : a;
}
// The largest finite magnitude's bits of the n values v, given abs_max_bits = q8_abs_bits_max over
// them: that, unless they held a NaN or inf (bits above FLT_MAX's), which is rare and takes a
// second pass of q8_amax_step.
template <class V> FASTNN_INLINE uint32_t q8_finite_amax(uint32_t abs_max_bits, const V* v, int64_t n) {
  if (abs_max_bits <= 0x7F7FFFFFu) return abs_max_bits;
  uint32_t a = 0;
  for (int64_t j = 0; j < n; ++j) a = q8_amax_step(a, float(v[j]));
  return a;
}

// The scale of a block whose largest finite magnitude has the bits amax_bits: that magnitude over
// the top code's value. inv: its reciprocal where that is a normal float (else 0: divide instead).
template <bool Signed> FASTNN_INLINE FASTNN_HD float q8_block_scale(uint32_t amax_bits, float* inv) {
  const float amax = q8_float(amax_bits);
  const float r = Q8Code<Signed>::kTopValue / amax;
  *inv = amax > 0.f && r >= 0x1p-126f && r <= 0x1p126f ? r : 0.f;
  return amax / Q8Code<Signed>::kTopValue;
}

// The code of value v in a block of this scale (inv as q8_block_scale gives it).
template <bool Signed> FASTNN_INLINE FASTNN_HD uint8_t q8_encode_value(float v, float scale, float inv,
                                                                      uint32_t add = kQ8HalfStep) {
  const float a = q8_float(q8_bits(v) & 0x7FFFFFFFu);  // |v|
  if (inv != 0.f) return q8_encode<Signed>(v, a, inv, add);
  return q8_encode<Signed>(v, scale != 0.f ? a / scale : 0.f, 1.f, add);  // x = a / scale rounded first
}

// Encodes the n <= kQ8Block values of one block, whose largest finite magnitude has the bits
// amax_bits, into out and returns the block's scale. Magnitudes are multiplied by 1 / scale where
// that is a normal float, else divided by the scale (tiny or huge blocks).
template <bool Signed, class V>
FASTNN_INLINE float q8_encode_block_scalar(const V* __restrict v, int64_t n, uint8_t* __restrict out,
                                           uint32_t amax_bits) {
  float inv;
  const float scale = q8_block_scale<Signed>(amax_bits, &inv);
  for (int64_t j = 0; j < n; ++j) out[j] = q8_encode_value<Signed>(float(v[j]), scale, inv);
  return scale;
}
template <bool Signed, class V> FASTNN_INLINE float q8_encode_block(const V* __restrict v, int64_t n,
                                                                    uint8_t* __restrict out) {
  uint32_t abs_max = 0;
  for (int64_t j = 0; j < n; ++j) abs_max = q8_abs_bits_max(abs_max, float(v[j]));
  return q8_encode_block_scalar<Signed>(v, n, out, q8_finite_amax(abs_max, v, n));
}
template <class V> FASTNN_INLINE float q8_encode_block(bool is_signed, const V* v, int64_t n, uint8_t* out) {
  return is_signed ? q8_encode_block<true>(v, n, out) : q8_encode_block<false>(v, n, out);
}

// Which states hold signed values (first moments, momentum) and which non-negative ones.
template <OptKind K> FASTNN_INLINE FASTNN_HD constexpr bool state_signed(int s) {
  if constexpr (K == OptKind::Adam) return s == 0;
  else if constexpr (K == OptKind::RMSprop) return s != 0;
  else if constexpr (K == OptKind::SGD) return true;
  else return false;
}
template <OptKind K> FASTNN_INLINE FASTNN_HD float q8_decode_state(int s, uint32_t c) {
  return state_signed<K>(s) ? q8_decode<true>(c) : q8_decode<false>(c);
}

}  // namespace optim_rules
}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
