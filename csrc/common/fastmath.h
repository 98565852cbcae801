// Elementwise math for the activation table.
//
// On the host, float and double: branch-free polynomial forms built only from +,*,/, compares and bit
// casts, so the compiler vectorizes every loop that calls them (libm's scalar tanhf/erff would not
// vectorize and cost ~20 ns an element). float: exp, log1p ~1 ulp; tanh ~6 ulp; normal CDF ~2e-7
// absolute (relative 5e-6 in the lower tail). double: within a few ulp (below). The device uses the
// CUDA math library.
#pragma once
#include <cmath>
#include <cstdint>
#include "hd.h"

namespace fastnn {
inline namespace FASTNN_ISA_NS {
namespace fm {

#if !defined(__CUDA_ARCH__)
FASTNN_INLINE float as_float(int32_t i) { return __builtin_bit_cast(float, i); }
FASTNN_INLINE int32_t as_int(float f) { return __builtin_bit_cast(int32_t, f); }

// Horner evaluation of c[0] + c[1] v + ... (coefficients are least-squares fits on Chebyshev nodes).
template <class T, int N>
FASTNN_INLINE T horner(const T (&c)[N], T v) {
  T r = c[N - 1];
  for (int i = N - 2; i >= 0; --i) r = r * v + c[i];
  return r;
}

// p * 2^fn by an add to p's exponent field: exact when the result is a normal float (callers keep fn
// in range), one integer add instead of multiplies by 2^(n/2) factors.
FASTNN_INLINE float scale_by_pow2(float p, float fn) {
  return as_float(as_int(p) + int32_t(uint32_t(int32_t(fn)) << 23));
}

// e^xc = exp_poly(xc, fn) * 2^fn for xc in [-87.34, 88.72] (fn: xc / ln2 rounded to an integer).
FASTNN_INLINE float exp_poly(float xc, float& fn) {
  fn = (xc * 1.44269504f + 12582912.f) - 12582912.f;  // round to nearest integer
  float r = xc - fn * 0.693145752f;                   // Cody-Waite: ln2 = hi + lo
  r = r - fn * 1.42860677e-06f;
  // Taylor series of e^r, |r| <= ln2/2: truncation error below 6e-9.
  return 1.f + r * (1.f + r * (0.5f + r * (1.f / 6 + r * (1.f / 24 + r * (1.f / 120 + r * (1.f / 720 + r * (1.f / 5040)))))));
}

FASTNN_INLINE float exp_host(float x) {
  // Below lo the result would be denormal: return 0 rather than pay for denormal arithmetic
  // (results under 1.2e-38 are lost; torch's own vectorized exp flushes similarly). Above hi it
  // overflows. Both are the last floats whose result is a normal float.
  const float hi = 88.7228317f, lo = -87.3365402f;
  float xc = x > hi ? hi : (x < lo ? lo : x);  // NaN falls through both compares
  float fn;
  float p = exp_poly(xc, fn);
  // 2^n added to p's exponent field: from lo to hi the result is a normal float (n in [-126, 128]
  // with p's field 126 or 127). One add instead of two multiplies by 2^(n/2) factors:
  // the sigmoid loop 0.369 -> 0.308 ns an element (Zen 4). Every float in [-200, 200] gives the bits
  // the two factors gave but -87.3365479 (e^x denormal: now flushed, as above; checked exhaustively).
  p = scale_by_pow2(p, fn);
  p = x > hi ? INFINITY : p;
  return x < lo ? 0.f : p;
}

// tanh as one rational function x P(x^2) / Q(x^2) on |x| <= 9 (beyond, float tanh is 1): a
// weighted least-squares fit of the relative error (Lawson iterations), max error 3.5e-7 (~6 ulp)
// when evaluated in float. One division and ~10 FMAs: half the cost of the exp-based form.
FASTNN_INLINE float tanh_host(float x) {
  const float p[5] = {9.9999996631e-01f, 1.3384961767e-01f, 3.5002192480e-03f, 2.0682319726e-05f,
                      1.3448081441e-08f};
  const float q[5] = {1.f, 4.6718276361e-01f, 2.5894727562e-02f, 3.2930964908e-04f, 7.8166283545e-07f};
  float xc = x > 9.f ? 9.f : (x < -9.f ? -9.f : x);  // NaN passes through
  float z = xc * xc;
  float r = xc * horner(p, z) / horner(q, z);
  r = r > 1.f ? 1.f : (r < -1.f ? -1.f : r);
  return r;
}

FASTNN_INLINE float sigmoid_host(float x) { return 1.f / (1.f + exp_host(-x)); }

// log(1+u) for u >= 0 (Kahan's trick: log(w) * u / (w - 1) with w = 1 + u rounded).
FASTNN_INLINE float log1p_host(float u) {
  float w = 1.f + u;
  int32_t bits = as_int(w);
  int32_t e = ((bits >> 23) & 0xff) - 127;
  float m = as_float((bits & 0x007fffff) | 0x3f800000);  // mantissa in [1, 2)
  bool shift = m > 1.41421356f;
  m = shift ? 0.5f * m : m;
  float ef = (float)e + (shift ? 1.f : 0.f);
  float s = (m - 1.f) / (m + 1.f), s2 = s * s;
  float logm = 2.f * s * (1.f + s2 * (1.f / 3 + s2 * (1.f / 5 + s2 * (1.f / 7 + s2 * (1.f / 9 + s2 * (1.f / 11))))));
  float logw = ef * 0.693147181f + logm;
  float r = logw * (u / (w - 1.f));
  r = w == 1.f ? u : r;
  return w == INFINITY ? INFINITY : r;
}

// e^(-v^2/2) for v in [0, 9 sqrt2] (the normal density's exponent): as exp_poly's reduction, then a
// degree-5 minimax polynomial (relative error 2e-7 in float) and the power of two added to the
// exponent bits. e^-81 is still a normal float, so no clamp, flush or overflow side.
FASTNN_INLINE float exp_neg_half_square_host(float v) {
  const float c[6] = {1.0000001192e+00f, 9.9999970198e-01f, 4.9998894334e-01f, 1.6667574644e-01f,
                      4.1915431619e-02f, 8.2976473495e-03f};
  const float s = v * v;
  const float fn = (s * -0.721347520f + 12582912.f) - 12582912.f;  // -s/2 / ln2, rounded
  float r = fn * -0.693145752f + s * -0.5f;                        // exact: fn has <= 7 bits
  r = fn * -1.42860677e-06f + r;
  return scale_by_pow2(horner(c, r), fn);
}

// Standard normal CDF Phi(x) = erfc(-x/sqrt2)/2 as e^(-v^2/2) R(v), v = |x|, with R(v) =
// erfc(v/sqrt2) e^(v^2/2) / 2 a rational fit on [0, 9 sqrt2] (relative error 5e-9, 4e-7 when
// evaluated in float): one branch, one exp, one division. The tail form keeps Phi's absolute error
// below ~2e-7 everywhere and its relative error small for very negative x, where 1 + erf(x/sqrt2)
// would cancel (GELU's relative error: 6e-7 for x >= -4, 5e-6 below). In v directly, so the
// exponent needs no clamp: 1.4x faster than the same fit in |x|/sqrt2 (Zen 4).
FASTNN_INLINE float normcdf_pdf_host(float x, float& pdf) {
  const float p[5] = {5.0000000000e-01f, 4.3432101607e-01f, 1.8030259013e-01f, 3.9647497237e-02f,
                      3.9706458338e-03f};
  const float q[6] = {1.f, 1.6665269136e+00f, 1.1902974844e+00f, 4.6173045039e-01f, 9.9389448762e-02f,
                      9.9527761340e-03f};
  const float vmax = 12.7279220f;  // 9 sqrt2: beyond, Phi(-v) < 3e-37, returned as 0
  const float v = x < 0 ? -x : x;
  const float vc = v > vmax ? vmax : v;
  const float e = exp_neg_half_square_host(vc);
  float c = e * (horner(p, vc) / horner(q, vc));
  c = v > vmax ? 0.f : c;
  pdf = v > vmax ? 0.f : 0.398942280f * e;
  return x > 0 ? 1.f - c : c;
}
FASTNN_INLINE float normcdf_host(float x) {
  float pdf;
  return normcdf_pdf_host(x, pdf);
}

// ---- double on the host: the same kinds of forms, vectorizable, within a few ulp (libm's scalar exp,
// tanh and log1p would not vectorize: ~3-6x slower passes than torch's own float64 activations). ----
FASTNN_INLINE double as_double(int64_t i) { return __builtin_bit_cast(double, i); }
FASTNN_INLINE int64_t as_int(double d) { return __builtin_bit_cast(int64_t, d); }

// e^x: Cody-Waite with ln2 = hi (40 bits: n hi is exact) + lo, the Taylor series of e^r to r^12
// (|r| <= ln2/2: truncation 2e-17), 2^n from the rounding's own bits (no float-to-integer conversion,
// which AVX2 has no vector form of for 64 bits) as 2^(n-1) 2. ~1 ulp; below -708 (results near
// the subnormal range) 0, as the float version flushes.
// e^(a + b) with b (|b| <~ 2) joined to the reduced argument after the exact Cody-Waite step, so a
// large a and a small b lose nothing to a rounded a + b.
FASTNN_INLINE double exp_sum_host(double x, double b) {
  const double c[13] = {1.0, 1.0, 5.00000000000000000e-01, 1.66666666666666657e-01, 4.16666666666666644e-02,
                        8.33333333333333322e-03, 1.38888888888888894e-03, 1.98412698412698413e-04,
                        2.48015873015873016e-05, 2.75573192239858925e-06, 2.75573192239858883e-07,
                        2.50521083854417202e-08, 2.08767569878681002e-09};
  const double hi = 709.782712893383973, lo = -708.0;  // n = x / ln2 rounded stays in [-1021, 1024]
  const double xc = x > hi ? hi : (x < lo ? lo : x);   // NaN falls through both compares
  const double kd = (xc + b) * 1.44269504088896339 + 6755399441055744.0;  // 1.5 2^52 + n
  const double fn = kd - 6755399441055744.0;
  double r = (xc - fn * 0x1.62e42fefa3000p-1) + b;
  r = r - fn * 2.8235290563031577e-13;
  const double p = horner(c, r);
  // the low bits of kd are n (two's complement): exponent field n - 1 + 1023, in [1, 2046]
  // (unsigned: a NaN's bits would overflow a signed subtraction or shift)
  const uint64_t field = uint64_t(as_int(kd)) - uint64_t(as_int(6755399441055744.0)) + 1022u;
  double e = p * __builtin_bit_cast(double, field << 52) * 2.0;
  e = x > hi ? INFINITY : e;
  return x < lo ? 0.0 : e;
}
// b = -0.0: x + -0.0 is x for every x, so the compiler drops both adds (+0.0 would turn -0 into +0).
FASTNN_INLINE double exp_host(double x) { return exp_sum_host(x, -0.0); }

FASTNN_INLINE double sigmoid_host(double x) { return 1.0 / (1.0 + exp_host(-x)); }

// tanh: below |x| = 0.35 its odd Taylor series to x^25 (truncation 1e-17 relative), above
// (1 - t) / (1 + t) with t = e^(-2|x|) >= 0 (no cancellation there: 1 - t >= 0.5). ~2 ulp.
FASTNN_INLINE double tanh_host(double x) {
  const double c[13] = {1.0, -3.33333333333333315e-01, 1.33333333333333331e-01, -5.39682539682539708e-02,
                        2.18694885361552030e-02, -8.86323552990219733e-03, 3.59212803657248114e-03,
                        -1.45583438705131833e-03, 5.90027440945585947e-04, -2.39129114243552478e-04,
                        9.69153795692945095e-05, -3.92783238833168327e-05, 1.59189050693289637e-05};
  const double a = x < 0 ? -x : x;
  const double small = x * horner(c, x * x);
  const double t = exp_host(-2.0 * (a > 20.0 ? 20.0 : a));  // beyond 20, tanh is 1 in double
  const double large = (1.0 - t) / (1.0 + t);
  return a < 0.35 ? small : (x < 0 ? -large : large);  // NaN stays NaN
}

// c[0] + c[1] v + ... as four interleaved Horner chains in v^4 (the coefficients of each residue mod 4):
// a long polynomial's latency a quarter of one chain's, where the loop around it is latency-bound.
template <int N>
FASTNN_INLINE double horner4(const double (&c)[N], double v) {
  static_assert(N >= 4, "four chains");
  const double v2 = v * v, v4 = v2 * v2;
  double r[4];
  FASTNN_HOST_UNROLL(4)
  for (int j = 0; j < 4; ++j) {
    const int top = j + 4 * ((N - 1 - j) / 4);
    double acc = c[top];
    FASTNN_HOST_UNROLL(16)
    for (int i = top - 4; i >= 0; i -= 4) acc = acc * v4 + c[i];
    r[j] = acc;
  }
  return (r[0] + v * r[1]) + v2 * (r[2] + v * r[3]);
}

// Phi(x) and the density for double: erfc(u) = t e^(-u^2 + P(s)), u = |x|/sqrt2, t = 2/(2+u),
// s = 2t - 1 in [-1, 1], P the polynomial of a Chebyshev series of log(erfc(u) e^(u^2) / t) (30
// terms fitted in 50-digit arithmetic, truncation ~1e-18; as monomials in s, all below 0.68 in size:
// 2e-16 absolute error in double), the form that stays accurate into the far lower tail.
// -u^2 = -x^2/2 is taken exactly where the table has FMA (x^2 split), so the tail's error is exp's,
// not the argument's rounding. Relative error ~1e-15 from the center into the tail; two exps, one
// division.
// What Phi and its density share: t, P(s), and x^2 = sq + sq_lo.
struct NormcdfParts {
  double t, P, sq, sq_lo;
};
FASTNN_INLINE NormcdfParts normcdf_parts(double x) {
  const double m[30] = {-6.71794084056692276e-01, 6.72643223977656746e-01, 4.73433068419044090e-02, -4.68956102311847492e-02,
                        -9.87268936638868375e-03, 8.82493855745383055e-03, 1.75893355776638198e-03, -2.34581250812231339e-03,
                        -1.46246862942106304e-04, 6.73678879614294309e-04, -9.37350346581582297e-05, -1.74303527802031438e-04,
                        7.14010321974850240e-05, 3.17478594369229614e-05, -3.01879480939514858e-05, 1.29151641390877421e-07,
                        8.56277909938652409e-06, -2.92856702416178798e-06, -1.27258052791477174e-06, 1.21868333738056564e-06,
                        -1.68172831940441255e-07, -2.13761191741784242e-07, 1.53073183663239277e-07, -2.68729874998667936e-08,
                        -3.90249316266618163e-08, 2.58976359819596287e-08, 4.01387770421450620e-09, -6.42108712961318309e-09,
                        6.71492039360197895e-12, 6.24945728099135128e-10};
  NormcdfParts q;
  const double u = (x < 0 ? -x : x) * 0.70710678118654752;
  q.t = 2.0 / (2.0 + u);
  q.P = horner4(m, 2.0 * q.t - 1.0);
  q.sq = x * x;
#if defined(FASTNN_FMA) && FASTNN_FMA
  q.sq_lo = __builtin_fma(x, x, -q.sq);  // x^2 = sq + sq_lo exactly
#else
  q.sq_lo = 0.0;  // no fused multiply-add in this table: x^2 rounded, as the C library's form
#endif
  return q;
}
FASTNN_INLINE double normcdf_host(double x) {
  const NormcdfParts q = normcdf_parts(x);
  const double c_tail = 0.5 * q.t * exp_sum_host(-0.5 * q.sq, q.P - 0.5 * q.sq_lo);  // Phi(-|x|): one exp
  return x > 0 ? 1.0 - c_tail : c_tail;
}
FASTNN_INLINE double normcdf_pdf_host(double x, double& pdf) {
  const NormcdfParts q = normcdf_parts(x);
  const double e = exp_host(-0.5 * q.sq);  // e^(-x^2/2) up to the factor e^(-sq_lo/2)
  const double c_tail = 0.5 * q.t * e * exp_host(q.P - 0.5 * q.sq_lo);
  pdf = 0.398942280401432678 * e * (1.0 - 0.5 * q.sq_lo);
  return x > 0 ? 1.0 - c_tail : c_tail;
}

// log(1+u) for u >= 0: Kahan's trick as the float version, log of the mantissa m in [sqrt2/2, sqrt2)
// as 2 atanh(s), s = (m-1)/(m+1), |s| <= 0.172: the series to s^23 (truncation 1e-18).
FASTNN_INLINE double log1p_host(double u) {
  const double w = 1.0 + u;
  const int64_t bits = as_int(w);
  // the biased exponent as a double without an integer-to-float conversion (none for 64 bits in AVX2)
  const double eb = as_double(((bits >> 52) & 0x7ff) | 0x4330000000000000LL) - 4503599627370496.0;
  double m = as_double((bits & 0x000fffffffffffffLL) | 0x3ff0000000000000LL);  // in [1, 2)
  const bool shift = m > 1.41421356237309515;
  m = shift ? 0.5 * m : m;
  const double ef = eb - 1023.0 + (shift ? 1.0 : 0.0);
  const double sq = (m - 1.0) / (m + 1.0), s2 = sq * sq;
  const double c[12] = {1.0, 1.0 / 3, 1.0 / 5, 1.0 / 7, 1.0 / 9, 1.0 / 11, 1.0 / 13, 1.0 / 15, 1.0 / 17, 1.0 / 19,
                        1.0 / 21, 1.0 / 23};
  const double logm = 2.0 * sq * horner(c, s2);
  const double logw = ef * 0x1.62e42fefa3000p-1 + (logm + ef * 2.8235290563031577e-13);
  const double r = logw * (u / (w - 1.0));
  return w == 1.0 ? u : (w == INFINITY ? INFINITY : r);
}
#endif

// ---- The functions the activation table calls: float and double, host and device. ----
#if defined(__CUDA_ARCH__)
FASTNN_INLINE FASTNN_HD float exp(float x) { return ::expf(x); }
FASTNN_INLINE FASTNN_HD double exp(double x) { return ::exp(x); }
FASTNN_INLINE FASTNN_HD float tanh(float x) { return ::tanhf(x); }
FASTNN_INLINE FASTNN_HD double tanh(double x) { return ::tanh(x); }
FASTNN_INLINE FASTNN_HD float sigmoid(float x) { return 1.f / (1.f + ::expf(-x)); }
FASTNN_INLINE FASTNN_HD double sigmoid(double x) { return 1.0 / (1.0 + ::exp(-x)); }
FASTNN_INLINE FASTNN_HD float log1p(float x) { return ::log1pf(x); }
FASTNN_INLINE FASTNN_HD double log1p(double x) { return ::log1p(x); }
FASTNN_INLINE FASTNN_HD float normcdf(float x) { return ::normcdff(x); }
FASTNN_INLINE FASTNN_HD double normcdf(double x) { return 0.5 * ::erfc(-x * 0.70710678118654752440); }
// Phi(x) and the density phi(x) together (the host forms share exp(-x^2/2) between them).
FASTNN_INLINE FASTNN_HD float normcdf_pdf(float x, float& pdf) {
  pdf = 0.398942280f * ::expf(-0.5f * x * x);
  return ::normcdff(x);
}
FASTNN_INLINE FASTNN_HD double normcdf_pdf(double x, double& pdf) {
  pdf = 0.39894228040143267794 * ::exp(-0.5 * x * x);
  return normcdf(x);
}
#else
// The host forms above, for float and double alike.
template <class T> FASTNN_INLINE FASTNN_HD T exp(T x) { return exp_host(x); }
template <class T> FASTNN_INLINE FASTNN_HD T tanh(T x) { return tanh_host(x); }
template <class T> FASTNN_INLINE FASTNN_HD T sigmoid(T x) { return sigmoid_host(x); }
template <class T> FASTNN_INLINE FASTNN_HD T log1p(T x) { return log1p_host(x); }
template <class T> FASTNN_INLINE FASTNN_HD T normcdf(T x) { return normcdf_host(x); }
template <class T> FASTNN_INLINE FASTNN_HD T normcdf_pdf(T x, T& pdf) { return normcdf_pdf_host(x, pdf); }
#endif

}  // namespace fm
}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
