// The CPU multi-tensor launcher: one parallel region per step for all tensors of all groups, with
// the elements split evenly across threads regardless of tensor boundaries (torch's fused CPU
// optimizers fork/join once per tensor). Each thread streams its range through the rule in
// optim_functors.h, instantiated per flag combination so the inner loop is branch-free.
#pragma once
#include <cstdint>
#include <type_traits>
#include <omp.h>
// The translation unit has included cpu_isa/isa_prelude.h (<immintrin.h>, cpu_fp_env.h) before its target pragma.

#include "../common/cpu_fp_env.h"
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

// ---- 8-bit state blocks ----
// A block's codes decoded to floats (times the block scale sc), and floats encoded to codes, as
// the scalar codec in optim_functors.h does it, bit for bit. With AVX-512 (16 values) or AVX2 (8),
// by integer arithmetic on the float bits: GCC's own vectorization of the scalar codec took over
// half of the 8-bit step. The base table, and a partial block's tail, run the scalar codec.
#if FASTNN_VEC_BYTES == 64
template <bool Signed> FASTNN_INLINE __m512 q8_decode16(const uint8_t* q, __m512 sc) {
  using Q = Q8Code<Signed>;
  const __m512i u = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)q));
  // Normal codes: (magnitude << 20) | (rebiased exponent << 23); the bias's bits lie above the
  // code's, so its add is an or, and the magnitude's mask goes in the same ternary op.
  const __m512i nb = _mm512_ternarylogic_epi32(_mm512_slli_epi32(u, 20), _mm512_set1_epi32(Signed ? 0x07F00000 : 0x0FF00000),
                                               _mm512_set1_epi32(int((127u - Q::kEmax) << 23)), 0xEA);  // a & b | c
  // Exponent field 0 (subnormal codes): m 2^-(Emax+2) = 2 (2^-Emax (1 + m/8)) - 2^(1-Emax), exactly.
  const __mmask16 sub = _mm512_testn_epi32_mask(u, _mm512_set1_epi32(Signed ? 0x78 : 0xF8));
  __m512 v = _mm512_mask_fmsub_ps(_mm512_castsi512_ps(nb), sub, _mm512_set1_ps(2.f), _mm512_set1_ps(Q::kNormalMin));
  if (Signed)  // the code's sign bit moved to the float's: a | b & c
    v = _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_castps_si512(v), _mm512_slli_epi32(u, 24),
                                                      _mm512_set1_epi32(int(0x80000000u)), 0xF8));
  // NaN codes: the scale's multiply masked off, NaN in its place.
  return _mm512_mask_mul_ps(_mm512_castsi512_ps(_mm512_set1_epi32(0x7FC00000)),
                            _mm512_cmpneq_epi32_mask(u, _mm512_set1_epi32(int(Q::kNan))), sc, v);
}

// 16 codes, as dwords (inv: 1 / the block's scale, a normal float). Finite values never round
// above the top code; NaN and inf land above it and are clamped to the NaN code (signed) or
// saturated to it, 0xFF, by the unsigned byte pack (unsigned). Finite: the block holds no NaN or
// inf, so the clamp is left out.
template <bool Signed, bool Finite = false> FASTNN_INLINE __m512i q8_sign16(__m512i c, __m512i vb) {
  if (!Signed) return c;
  if (!Finite) c = _mm512_min_epu32(c, _mm512_set1_epi32(int(Q8Code<Signed>::kNan)));
  return _mm512_mask_ternarylogic_epi32(c, _mm512_test_epi32_mask(c, c), _mm512_srli_epi32(vb, 24), _mm512_set1_epi32(0x80), 0xF8);
}
// Stochastic rounding (SR): x''s bits clamped to the top code's, plus the random add, then NaN and
// inf, which the clamp caught too, set to the NaN code (Finite: none in the block).
template <bool Signed, bool Finite> FASTNN_INLINE __m512i q8_round16_sr(__m512i xb, __m512i add, __m512i vb) {
  using Q = Q8Code<Signed>;
  __m512i c = _mm512_srli_epi32(_mm512_add_epi32(_mm512_min_epu32(xb, _mm512_set1_epi32(int(Q::kTop << 20))), add), 20);
  if (!Finite)
    c = _mm512_mask_mov_epi32(c, _mm512_cmpgt_epu32_mask(_mm512_and_si512(vb, _mm512_set1_epi32(0x7FFFFFFF)),
                                                         _mm512_set1_epi32(0x7F7FFFFF)),
                              _mm512_set1_epi32(int(Q::kNan)));
  return q8_sign16<Signed, true>(c, vb);
}
template <bool Signed, bool SR = false> FASTNN_INLINE __m512i q8_encode16(__m512 v, __m512 inv, __m512i add = __m512i()) {
  using Q = Q8Code<Signed>;
  const __m512i vb = _mm512_castps_si512(v);
  const __m512 a = _mm512_castsi512_ps(_mm512_and_si512(vb, _mm512_set1_epi32(0x7FFFFFFF)));
  const __m512 x = _mm512_mul_ps(a, inv);
  const __m512 kn = _mm512_set1_ps(Q::kNormalMin);
  if constexpr (SR) {
    const __m512i xn = _mm512_sub_epi32(_mm512_castps_si512(x), _mm512_set1_epi32(int((127u - Q::kEmax) << 23)));
    const __m512i xs = _mm512_sub_epi32(_mm512_castps_si512(_mm512_fmadd_ps(a, inv, kn)), _mm512_set1_epi32(int(q8_bits(Q::kNormalMin))));
    return q8_round16_sr<Signed, false>(_mm512_mask_mov_epi32(xn, _mm512_cmp_ps_mask(x, kn, _CMP_LT_OQ), xs), add, vb);
  }
  // x''s bits plus half a code step: x' normal (x rebiased), or subnormal (the fma's rounding)
  const __m512i nb = _mm512_add_epi32(_mm512_castps_si512(x), _mm512_set1_epi32(int(0x80000u - ((127u - Q::kEmax) << 23))));
  const __m512i sb = _mm512_add_epi32(_mm512_castps_si512(_mm512_fmadd_ps(a, inv, kn)), _mm512_set1_epi32(int(0x80000u - q8_bits(Q::kNormalMin))));
  const __m512i c = _mm512_srli_epi32(_mm512_mask_mov_epi32(nb, _mm512_cmp_ps_mask(x, kn, _CMP_LT_OQ), sb), 20);
  return q8_sign16<Signed>(c, vb);
}

// The codec with one multiply a value (the subnormal codec): x' and the code's value differ by the
// power of two kToSub, so one multiply by the block's inv_sub = inv kToSub (a normal float) encodes
// and one by sc_sub = sc / kToSub (finite) decodes, with the bits above. Subnormal codes are float32
// subnormals here, so it runs only on blocks that have none (q8_decode_run, q8_encode_run); the
// decoder, only on blocks without NaN codes either.
template <bool Signed, bool Finite, bool SR = false>
FASTNN_INLINE __m512i q8_encode16_sub(__m512 v, __m512 inv_sub, __m512i add = __m512i()) {
  const __m512i vb = _mm512_castps_si512(v);
  const __m512 x = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_and_si512(vb, _mm512_set1_epi32(0x7FFFFFFF))), inv_sub);
  if constexpr (SR) return q8_round16_sr<Signed, Finite>(_mm512_castps_si512(x), add, vb);
  return q8_sign16<Signed, Finite>(_mm512_srli_epi32(_mm512_add_epi32(_mm512_castps_si512(x), _mm512_set1_epi32(0x80000)), 20), vb);
}
template <bool Signed> FASTNN_INLINE __m512 q8_decode16_sub(const uint8_t* q, __m512 sc_sub) {
  const __m128i raw = _mm_loadu_si128((const __m128i*)q);
  // signed: the sign-extended code shifted to bit 20 has the sign in bits 27-31; bit 31 is kept
  const __m512i u = Signed ? _mm512_cvtepi8_epi32(raw) : _mm512_cvtepu8_epi32(raw);
  const __m512i x = Signed ? _mm512_and_si512(_mm512_slli_epi32(u, 20), _mm512_set1_epi32(int(0x87F00000u)))
                           : _mm512_slli_epi32(u, 20);
  return _mm512_mul_ps(sc_sub, _mm512_castsi512_ps(x));
}
#endif

#if FASTNN_VEC_BYTES == 32
template <bool Signed> FASTNN_INLINE __m256 q8_decode8(const uint8_t* q, __m256 sc) {
  using Q = Q8Code<Signed>;
  const __m256i u = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)q));
  const __m256i nb = _mm256_or_si256(_mm256_and_si256(_mm256_slli_epi32(u, 20), _mm256_set1_epi32(Signed ? 0x07F00000 : 0x0FF00000)),
                                     _mm256_set1_epi32(int((127u - Q::kEmax) << 23)));
  const __m256i sub = _mm256_cmpeq_epi32(_mm256_and_si256(u, _mm256_set1_epi32(Signed ? 0x78 : 0xF8)), _mm256_setzero_si256());
  const __m256 n = _mm256_castsi256_ps(nb);
  __m256 v = _mm256_blendv_ps(n, _mm256_fmsub_ps(n, _mm256_set1_ps(2.f), _mm256_set1_ps(Q::kNormalMin)), _mm256_castsi256_ps(sub));
  if (Signed)
    v = _mm256_or_ps(v, _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32(u, 24), _mm256_set1_epi32(int(0x80000000u)))));
  v = _mm256_blendv_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FC00000)),
                       _mm256_castsi256_ps(_mm256_cmpeq_epi32(u, _mm256_set1_epi32(int(Q::kNan)))));
  return _mm256_mul_ps(sc, v);
}
// 8 codes as dwords, each <= 0xFFF (the byte pack saturates unsigned NaN and inf to 0xFF).
template <bool Signed, bool Finite = false> FASTNN_INLINE __m256i q8_sign8(__m256i c, __m256i vb) {
  if (!Signed) return c;
  if (!Finite) c = _mm256_min_epu32(c, _mm256_set1_epi32(int(Q8Code<Signed>::kNan)));
  const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(vb, 24), _mm256_set1_epi32(0x80));
  return _mm256_or_si256(c, _mm256_andnot_si256(_mm256_cmpeq_epi32(c, _mm256_setzero_si256()), sign));
}
template <bool Signed, bool Finite> FASTNN_INLINE __m256i q8_round8_sr(__m256i xb, __m256i add, __m256i vb) {
  using Q = Q8Code<Signed>;
  __m256i c = _mm256_srli_epi32(_mm256_add_epi32(_mm256_min_epu32(xb, _mm256_set1_epi32(int(Q::kTop << 20))), add), 20);
  if (!Finite)
    c = _mm256_blendv_epi8(c, _mm256_set1_epi32(int(Q::kNan)),
                           _mm256_cmpgt_epi32(_mm256_and_si256(vb, _mm256_set1_epi32(0x7FFFFFFF)), _mm256_set1_epi32(0x7F7FFFFF)));
  return q8_sign8<Signed, true>(c, vb);
}
template <bool Signed, bool SR = false> FASTNN_INLINE __m256i q8_encode8(__m256 v, __m256 inv, __m256i add = __m256i()) {
  using Q = Q8Code<Signed>;
  const __m256i vb = _mm256_castps_si256(v);
  const __m256 a = _mm256_castsi256_ps(_mm256_and_si256(vb, _mm256_set1_epi32(0x7FFFFFFF)));
  const __m256 x = _mm256_mul_ps(a, inv);
  const __m256 kn = _mm256_set1_ps(Q::kNormalMin);
  if constexpr (SR) {
    const __m256i xn = _mm256_sub_epi32(_mm256_castps_si256(x), _mm256_set1_epi32(int((127u - Q::kEmax) << 23)));
    const __m256i xs = _mm256_sub_epi32(_mm256_castps_si256(_mm256_fmadd_ps(a, inv, kn)), _mm256_set1_epi32(int(q8_bits(Q::kNormalMin))));
    const __m256i xb = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(xn), _mm256_castsi256_ps(xs), _mm256_cmp_ps(x, kn, _CMP_LT_OQ)));
    return q8_round8_sr<Signed, false>(xb, add, vb);
  }
  const __m256i nb = _mm256_add_epi32(_mm256_castps_si256(x), _mm256_set1_epi32(int(0x80000u - ((127u - Q::kEmax) << 23))));
  const __m256i sb = _mm256_add_epi32(_mm256_castps_si256(_mm256_fmadd_ps(a, inv, kn)), _mm256_set1_epi32(int(0x80000u - q8_bits(Q::kNormalMin))));
  const __m256i c = _mm256_srli_epi32(_mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(nb), _mm256_castsi256_ps(sb),
                                                                           _mm256_cmp_ps(x, kn, _CMP_LT_OQ))), 20);
  return q8_sign8<Signed>(c, vb);
}
template <bool Signed, bool Finite, bool SR = false>
FASTNN_INLINE __m256i q8_encode8_sub(__m256 v, __m256 inv_sub, __m256i add = __m256i()) {
  const __m256i vb = _mm256_castps_si256(v);
  const __m256 x = _mm256_mul_ps(_mm256_castsi256_ps(_mm256_and_si256(vb, _mm256_set1_epi32(0x7FFFFFFF))), inv_sub);
  if constexpr (SR) return q8_round8_sr<Signed, Finite>(_mm256_castps_si256(x), add, vb);
  return q8_sign8<Signed, Finite>(_mm256_srli_epi32(_mm256_add_epi32(_mm256_castps_si256(x), _mm256_set1_epi32(0x80000)), 20), vb);
}
template <bool Signed> FASTNN_INLINE __m256 q8_decode8_sub(const uint8_t* q, __m256 sc_sub) {
  const __m128i raw = _mm_loadl_epi64((const __m128i*)q);
  const __m256i u = Signed ? _mm256_cvtepi8_epi32(raw) : _mm256_cvtepu8_epi32(raw);
  const __m256i x = Signed ? _mm256_and_si256(_mm256_slli_epi32(u, 20), _mm256_set1_epi32(int(0x87F00000u)))
                           : _mm256_slli_epi32(u, 20);
  return _mm256_mul_ps(sc_sub, _mm256_castsi256_ps(x));
}
// 32 codes from 4 vectors of 8, in order (the packs interleave 128-bit lanes; the permute undoes it).
FASTNN_INLINE __m256i q8_pack32(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i w = _mm256_packus_epi16(_mm256_packus_epi32(a, b), _mm256_packus_epi32(c, d));
  return _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}
#endif

// Whether any of the n codes is subnormal (exponent field 0, mantissa not 0) or the NaN code. A
// code with exponent field 0 that is not 0 is one of them, signed NaN 0x80 included; unsigned
// NaN is 0xFF.
template <bool Signed> FASTNN_INLINE bool q8_any_subnormal_or_nan_code(const uint8_t* __restrict q, int64_t n) {
  constexpr int kExp = Signed ? 0x78 : 0xF8;
  int64_t j = 0;
  bool any = false;
#if FASTNN_VEC_BYTES == 64
  __mmask64 acc = 0;
  for (; j + 64 <= n; j += 64) {
    const __m512i x = _mm512_loadu_si512((const void*)(q + j));
    acc |= _mm512_mask_test_epi8_mask(_mm512_testn_epi8_mask(x, _mm512_set1_epi8(char(kExp))), x, x);
    if (!Signed) acc |= _mm512_cmpeq_epi8_mask(x, _mm512_set1_epi8(char(0xFF)));
  }
  any = acc != 0;
#elif FASTNN_VEC_BYTES == 32
  __m256i acc = _mm256_setzero_si256();
  for (; j + 32 <= n; j += 32) {
    const __m256i x = _mm256_loadu_si256((const __m256i*)(q + j)), z = _mm256_setzero_si256();
    const __m256i e0 = _mm256_cmpeq_epi8(_mm256_and_si256(x, _mm256_set1_epi8(char(kExp))), z);
    acc = _mm256_or_si256(acc, _mm256_andnot_si256(_mm256_cmpeq_epi8(x, z), e0));
    if (!Signed) acc = _mm256_or_si256(acc, _mm256_cmpeq_epi8(x, _mm256_set1_epi8(char(0xFF))));
  }
  any = _mm256_movemask_epi8(acc) != 0;
#endif
  for (; j < n; ++j) any |= ((q[j] & kExp) == 0 && q[j] != 0) || q[j] == Q8Code<Signed>::kNan;
  return any;
}

// One vector of codes decoded (times the scale s) and of values encoded (times inv), in the
// normal-float form or the subnormal one (Sub: s and inv already scaled by 1 / kToSub and kToSub;
// Finite: the subnormal encoder on a block without NaN or inf).
// SR: codes rounded stochastically, with the random adds at `add` (one per value; else unused).
template <bool Signed, bool Sub, bool Finite = false, bool SR = false> struct Q8Codec {
  static constexpr bool kSR = SR;
#if FASTNN_VEC_BYTES == 64
  static FASTNN_INLINE __m512 dec(const uint8_t* q, __m512 s) { return Sub ? q8_decode16_sub<Signed>(q, s) : q8_decode16<Signed>(q, s); }
  static FASTNN_INLINE __m512i enc(__m512 v, __m512 iv, const uint32_t* add) {
    const __m512i r = SR ? _mm512_loadu_si512((const void*)add) : __m512i();
    return Sub ? q8_encode16_sub<Signed, Finite, SR>(v, iv, r) : q8_encode16<Signed, SR>(v, iv, r);
  }
#elif FASTNN_VEC_BYTES == 32
  static FASTNN_INLINE __m256 dec(const uint8_t* q, __m256 s) { return Sub ? q8_decode8_sub<Signed>(q, s) : q8_decode8<Signed>(q, s); }
  static FASTNN_INLINE __m256i enc(__m256 v, __m256 iv, const uint32_t* add) {
    const __m256i r = SR ? _mm256_loadu_si256((const __m256i*)add) : __m256i();
    return Sub ? q8_encode8_sub<Signed, Finite, SR>(v, iv, r) : q8_encode8<Signed, SR>(v, iv, r);
  }
#endif
};

// The whole vectors of a run of n codes or values; return how many they covered (the scalar codec
// does the rest; the base table has no vectors).
template <class Q> FASTNN_INLINE int64_t q8_decode_vectors(const uint8_t* __restrict q, int64_t n, float* __restrict out, float sc) {
  int64_t j = 0;
#if FASTNN_VEC_BYTES == 64
  const __m512 s = _mm512_set1_ps(sc);
  for (; j + 16 <= n; j += 16) _mm512_storeu_ps(out + j, Q::dec(q + j, s));
#elif FASTNN_VEC_BYTES == 32
  const __m256 s = _mm256_set1_ps(sc);
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(out + j, Q::dec(q + j, s));
#else
  (void)q, (void)n, (void)out, (void)sc;
#endif
  return j;
}
// add: Q's random adds (Q::kSR), else null and not offset.
template <class Q> FASTNN_INLINE int64_t q8_encode_vectors(const float* __restrict v, int64_t n, uint8_t* __restrict out, float inv,
                                                         const uint32_t* __restrict add) {
  int64_t j = 0;
  auto at = [add](int64_t k) { return Q::kSR ? add + k : add; };
#if FASTNN_VEC_BYTES == 64
  const __m512 iv = _mm512_set1_ps(inv);
  for (; j + 16 <= n; j += 16) _mm_storeu_si128((__m128i*)(out + j), _mm512_cvtusepi32_epi8(Q::enc(_mm512_loadu_ps(v + j), iv, at(j))));
#elif FASTNN_VEC_BYTES == 32
  const __m256 iv = _mm256_set1_ps(inv);
  for (; j + 32 <= n; j += 32)
    _mm256_storeu_si256((__m256i*)(out + j),
                        q8_pack32(Q::enc(_mm256_loadu_ps(v + j), iv, at(j)), Q::enc(_mm256_loadu_ps(v + j + 8), iv, at(j + 8)),
                                  Q::enc(_mm256_loadu_ps(v + j + 16), iv, at(j + 16)),
                                  Q::enc(_mm256_loadu_ps(v + j + 24), iv, at(j + 24))));
#else
  (void)v, (void)n, (void)out, (void)inv, (void)at;
#endif
  return j;
}

// The subnormal form decodes a block only where no multiply of it meets a subnormal operand or
// result (CPUs with assists for those, Intel, and a Zen 4 core, which pays ~9 cycles per vector
// with subnormal results: benchmarks/RESULTS.md); a byte scan of the codes says so exactly. For
// encoding, the new values' smallest magnitude would say it, at one more vector op per value and
// state in the rule loop; the block's decoding answers instead (update_block_q8): a block whose
// stored codes had no subnormal code is encoded in the subnormal form too. Only where its values
// fell 2^14 (signed) or 2^30 (unsigned) below its largest since the last step does that encode
// meet subnormal results, once: from the next step the scan keeps the block on the normal-float
// form. The bits are the same either way; allow_sub = false (benchmarks) keeps to the normal form.
constexpr bool kQ8Vectors = FASTNN_VEC_BYTES >= 32;

// Decoding: the subnormal form where the block has no subnormal or NaN code and its scale is
// below kScaleMax; returns whether it ran.
template <bool Signed> FASTNN_INLINE bool q8_decode_run(const uint8_t* __restrict q, float sc, int64_t n,
                                                        float* __restrict out, bool allow_sub = true) {
  using Q = Q8Code<Signed>;
  const bool sub = kQ8Vectors && allow_sub && sc < Q::kScaleMax && !q8_any_subnormal_or_nan_code<Signed>(q, n);
  int64_t j = sub ? q8_decode_vectors<Q8Codec<Signed, true>>(q, n, out, sc * Q::kFromSub)
                  : q8_decode_vectors<Q8Codec<Signed, false>>(q, n, out, sc);
  for (; j < n; ++j) out[j] = sc * q8_decode<Signed>(q[j]);
  return sub;
}

// Encodes n <= kQ8Block values whose largest magnitude has the bits abs_max_bits (q8_abs_bits_max
// over them: NaN and inf included); returns the scale. sub: the subnormal form, where inv kToSub
// is a normal float.
// SR: the codes rounded stochastically with the random adds add[0, n) (sr_q8_add), else to nearest.
template <bool Signed, bool SR = false>
FASTNN_INLINE float q8_encode_run(const float* __restrict v, int64_t n, uint8_t* __restrict out, uint32_t abs_max_bits,
                                  bool sub, const uint32_t* __restrict add = nullptr) {
  using Q = Q8Code<Signed>;
  const bool finite = abs_max_bits <= 0x7F7FFFFFu;
  float inv;
  const float scale = q8_block_scale<Signed>(q8_finite_amax(abs_max_bits, v, n), &inv);
  int64_t j = 0;
  if (inv != 0.f) {  // tiny and huge blocks divide instead: the scalar codec below
    if (kQ8Vectors && sub && inv >= Q::kNormalMin)
      j = finite ? q8_encode_vectors<Q8Codec<Signed, true, true, SR>>(v, n, out, inv * Q::kToSub, add)
                 : q8_encode_vectors<Q8Codec<Signed, true, false, SR>>(v, n, out, inv * Q::kToSub, add);
    else
      j = q8_encode_vectors<Q8Codec<Signed, false, false, SR>>(v, n, out, inv, add);
  }
  for (; j < n; ++j) out[j] = q8_encode_value<Signed>(v[j], scale, inv, SR ? add[j] : kQ8HalfStep);
  return scale;
}

// The random adds of a block's stochastically rounded codes (StochasticStore::q8_add of each element
// b0 + j, for the states F writes): the counter of b0 + j is sr_counter(key, b0) + j, since b0 is a
// multiple of kQ8Block and j < kQ8Block.
template <OptKind K> FASTNN_INLINE void q8_random_adds(const int F, uint64_t key, int64_t b0, int64_t n,
                                                      uint32_t (*__restrict add)[kQ8Block]) {
  const uint32_t x0 = sr_counter(key, b0);
  if (writes_state<K>(F, 0) || writes_state<K>(F, 1))  // one hash for states 0 and 1
    for (int64_t j = 0; j < n; ++j) {
      const uint32_t h = sr_hash(x0 + uint32_t(j), key, 1);
      add[0][j] = sr_q8_add(sr_bits16(h, 1));
      add[1][j] = sr_q8_add(sr_bits16(h, 2));
    }
  if (writes_state<K>(F, 2))
    for (int64_t j = 0; j < n; ++j) add[2][j] = sr_q8_add(sr_bits16(sr_hash(x0 + uint32_t(j), key, 3), 3));
}

// One block of kQ8Block elements (n <= kQ8Block: the tensor's last block may be partial), starting
// at element b0: decode the states it reads, run the rule in C over the block (tracking each new
// state's largest magnitude), store the parameter, then re-scale and encode each written state
// (in the form its decoding took; a state written but not read, in the subnormal form).
template <OptKind K, class IO, class T, class Consts, class C, class Store = NearestStore>
FASTNN_INLINE void update_block_q8(const int F, const Consts& c, T* __restrict p, const T* __restrict g,
                                   uint8_t* const* q, float* const* qs, int64_t b0, int64_t n, C scale,
                                   C gsign, Store st = Store(), bool allow_sub = true) {
  static_assert(std::is_same<C, float>::value, "8-bit state: float32 math");
  alignas(64) float nv[3][kQ8Block];
  const int64_t blk = b0 / kQ8Block;
  bool sub[3] = {allow_sub, allow_sub, allow_sub};
FASTNN_UNROLL
  for (int s = 0; s < 3; ++s)
    if (reads_state<K>(F, s)) {
      if (state_signed<K>(s)) sub[s] = q8_decode_run<true>(q[s] + b0, qs[s][blk], n, nv[s], allow_sub);
      else sub[s] = q8_decode_run<false>(q[s] + b0, qs[s][blk], n, nv[s], allow_sub);
    }
  T* __restrict pb = p + b0;
  const T* __restrict gb = g + b0;
  float* __restrict n0 = nv[0];
  float* __restrict n1 = nv[1];
  float* __restrict n2 = nv[2];
  uint32_t amax[3] = {0, 0, 0};
  for (int64_t j = 0; j < n; ++j) {
    st.at(j);  // a run store of b0
    C pp = IO::ld(pb[j]);
    C gg = xor_sign((F & kUnscale) ? IO::ld(gb[j]) / scale : IO::ld(gb[j]), gsign);
    C v0 = reads_state<K>(F, 0) ? n0[j] : C(0);
    C v1 = reads_state<K>(F, 1) ? n1[j] : C(0);
    C v2 = reads_state<K>(F, 2) ? n2[j] : C(0);
    apply_rule<K>(F, c, pp, gg, v0, v1, v2);
    if (writes_state<K>(F, 0)) n0[j] = v0, amax[0] = q8_abs_bits_max(amax[0], v0);
    if (writes_state<K>(F, 1)) n1[j] = v1, amax[1] = q8_abs_bits_max(amax[1], v1);
    if (writes_state<K>(F, 2)) n2[j] = v2, amax[2] = q8_abs_bits_max(amax[2], v2);
    pb[j] = st.template store<IO, T>(pp, 0);
  }
  // Codes rounded stochastically where the store is (bf16 parameters or not), with its random bits.
  constexpr bool SR = std::is_base_of<StochasticStore, Store>::value;
  alignas(64) uint32_t radd[SR ? 3 : 1][kQ8Block];
  if constexpr (SR) q8_random_adds<K>(F, st.key, b0, n, radd);
FASTNN_UNROLL
  for (int s = 0; s < 3; ++s)
    if (writes_state<K>(F, s)) {
      const uint32_t* add = SR ? radd[SR ? s : 0] : nullptr;
      qs[s][blk] = state_signed<K>(s) ? q8_encode_run<true, SR>(nv[s], n, q[s] + b0, amax[s], sub[s], add)
                                      : q8_encode_run<false, SR>(nv[s], n, q[s] + b0, amax[s], sub[s], add);
    }
}

// Whether maximize is a compile-time flag (bit kMaximize of F) or a run-time sign (xor_sign of the
// gradient, bit kMaximize of the slot's flags). At run time, half as many kernels build; RMSprop's
// and Adagrad's steps showed no cost, but Adam's in-cache float32 and 8-bit steps lost 1.5-4% and
// SGD's 8-bit step 6-9% (Zen 3, benchmarks/optim_kernel_ab.sh; RESULTS.md), so those keep the flag.
template <OptKind K> constexpr bool kMaximizeFlag = K == OptKind::Adam || K == OptKind::SGD;

// Elements [b, e) of one tensor; F is a constant, so the loop body has no branches left. S: the
// state's storage type; SR: bf16 values rounded stochastically.
template <class T, class S, OptKind K, int F, bool SR>
void update_range(const OptSlot& s, int64_t b, int64_t e, const float* gs) {
  using C = compute_t<T>;
  const auto c = KindConsts<K, C>::make(s.k);
  const C scale = gs ? (C)*gs : C(1);
  const C gsign = (!kMaximizeFlag<K> && (s.flags & kMaximize)) ? C(-0.0) : C(0);
  T* __restrict p = (T*)s.param;
  const T* __restrict g = (const T*)s.grad;
  if constexpr (std::is_same<S, uint8_t>::value) {  // 8-bit state: whole blocks (b is block-aligned)
    uint8_t* const q[3] = {(uint8_t*)s.state[0], (uint8_t*)s.state[1], (uint8_t*)s.state[2]};
    float* const qs[3] = {s.qscale[0], s.qscale[1], s.qscale[2]};
    for (int64_t b0 = b; b0 < e; b0 += kQ8Block)
      update_block_q8<K, CpuIO>(F, c, p, g, q, qs, b0, imin(kQ8Block, e - b0), scale, gsign,
                                make_run_store<SR>(s.sr_key, b0));  // 2^32 is a multiple of kQ8Block
  } else {
    S* __restrict s0 = (S*)s.state[0];
    S* __restrict s1 = (S*)s.state[1];
    S* __restrict s2 = (S*)s.state[2];
    if constexpr (!SR) {
      for (int64_t i = b; i < e; ++i) update_element<K, CpuIO>(F, c, p, g, s0, s1, s2, i, scale, NearestStore(), gsign);
    } else {
      // Runs of elements with the same i >> 32, at most 2^30 of them (in practice the whole range),
      // indexed from the run's start by a 32-bit j: a stochastic store's counter is then a 32-bit
      // add an element, not sr_counter's 64-bit split and multiply, nor 64-bit lanes narrowed.
      for (int64_t i0 = b; i0 < e;) {
        const int64_t i1 = imin(imin(e, (i0 | int64_t(0xffffffff)) + 1), i0 + (int64_t(1) << 30));
        const auto st = make_run_store<SR>(s.sr_key, i0);
        T* __restrict pr = p + i0;
        const T* __restrict gr = g + i0;
        S* __restrict r0 = s0 ? s0 + i0 : nullptr;  // no offset on a null pointer (unused states)
        S* __restrict r1 = s1 ? s1 + i0 : nullptr;
        S* __restrict r2 = s2 ? s2 + i0 : nullptr;
        const uint32_t n = uint32_t(i1 - i0);
        for (uint32_t j = 0; j < n; ++j) update_element<K, CpuIO>(F, c, pr, gr, r0, r1, r2, j, scale, st, gsign);
        i0 = i1;
      }
    }
  }
}

template <OptKind K, class T, class S, bool SR>
FASTNN_INLINE void run_range(const OptSlot& s, int64_t b, int64_t e, const float* gs) {
  const int f = s.flags | (gs ? kUnscale : 0);
  auto run = [&](auto F) { update_range<T, S, K, decltype(F)::value, SR>(s, b, e, gs); };
  // Only the flag combinations that change the rule: decoupled weight decay needs weight decay,
  // Nesterov and the first step need momentum (each kernel costs build time in every ISA table).
  if constexpr (K == OptKind::Adam) {
    if (f & kWeightDecay) with_flags<kWeightDecay, kMaximize, kDecoupled, kAmsgrad, kUnscale>(f, run);
    else with_flags<0, kMaximize, kAmsgrad, kUnscale>(f, run);
  } else if constexpr (K == OptKind::RMSprop) {
    with_flags<0, kWeightDecay, kCentered, kMomentum, kUnscale>(f, run);
  } else if constexpr (K == OptKind::SGD) {
    if (f & kMomentum) with_flags<kMomentum, kMaximize, kWeightDecay, kNesterov, kFirstStep, kUnscale>(f, run);
    else with_flags<0, kMaximize, kWeightDecay, kUnscale>(f, run);
  } else {
    with_flags<0, kWeightDecay, kUnscale>(f, run);
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

// Per-thread runs of chunk indices [front, back), packed in one word each (front in the low 32
// bits) and a cache line apart: the owner claims from the front, any other thread from the back.
// GCC's atomic builtins and Scratch, not std::atomic and std::unique_ptr: no std template is
// instantiated in a per-ISA translation unit (storage.h).
class OwnedChunkRuns {
  struct alignas(64) Run { uint64_t w = 0; };
  Scratch<Run> r_;
  template <bool Front> bool take(int t, int64_t& ci) {
    uint64_t* const w = &r_[t].w;
    uint64_t cur = __atomic_load_n(w, __ATOMIC_RELAXED);
    for (;;) {
      const uint64_t f = cur & 0xFFFFFFFFu, b = cur >> 32;
      if (f >= b) return false;
      const uint64_t next = Front ? (b << 32 | (f + 1)) : ((b - 1) << 32 | f);
      if (__atomic_compare_exchange_n(w, &cur, next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        ci = int64_t(Front ? f : b - 1);
        return true;
      }
    }
  }

 public:
  explicit OwnedChunkRuns(int n) : r_(n) {}
  // Before the parallel region (its start orders these stores before the threads' loads).
  void own(int t, int64_t front, int64_t back) { r_[t].w = uint64_t(back) << 32 | uint64_t(front); }
  bool take_front(int t, int64_t& ci) { return take<true>(t, ci); }
  bool take_back(int t, int64_t& ci) { return take<false>(t, ci); }
};

template <OptKind K, class T, class S, bool SR>
void step_typed(const OptSlot* slots, int64_t nslots, const float* gs) {
  // 8-bit state: each tensor padded to whole blocks in the index space split below, and split
  // points on block boundaries, so every block is one thread's (and its scale written once).
  constexpr int64_t kAlign = std::is_same<S, uint8_t>::value ? kQ8Block : 64;
  Scratch<int64_t> start(nslots + 1);  // prefix sums of numel (padded)
  for (int64_t i = 0; i < nslots; ++i) start[i + 1] = start[i] + (slots[i].numel + kAlign - 1) / kAlign * kAlign;
  const int64_t total = start[nslots];
  const int nt = total >= kParallelMinElems ? omp_get_max_threads() : 1;
  // Each thread owns one contiguous run of chunks, the same run every step, and takes them from its
  // front; a thread out of work takes chunks from the back of the others' runs. Owned runs keep a
  // step whose data stays in cache in the same core's L2 from step to step: on 2 Zen 5 vCPUs,
  // 203K parameters (SGD with momentum, 4 MB) took 40 us with chunks handed to whichever thread
  // was free and 29 us with fixed halves, in the periods when the other took 27 (benchmarks/
  // RESULTS.md). Taking from the back still evens out a VM's cores running at different speeds (on
  // 2 Zen 4 vCPUs one took up to 2.2x as long as the other for its half of a 10M 8-bit Adam step).
  // Long chunks (at most 128K elements) keep each stream contiguous for the prefetchers; ~16 per
  // thread at least. Every element's arithmetic is its own, so the bits do not depend on who runs
  // it; chunk bounds are multiples of 64 elements (no cache line written by two threads) and of
  // 8-bit blocks.
  const int64_t chunk = imax(4096, imin(int64_t(1) << 17, total / (16 * int64_t(nt)) / kAlign * kAlign));
  const int64_t nchunks = (total + chunk - 1) / chunk;
  auto run_chunk = [&](int64_t ci) {
    const int64_t lo = ci * chunk, hi = imin(total, lo + chunk);
    int64_t a = 0, z = nslots;  // first slot whose range ends after lo
    while (a < z) {
      int64_t mid = (a + z) / 2;
      if (start[mid + 1] <= lo) a = mid + 1; else z = mid;
    }
    for (int64_t i = a; i < nslots && start[i] < hi; ++i) {
      const int64_t b = imax(lo, start[i]) - start[i];
      const int64_t e = imin(imin(hi, start[i + 1]) - start[i], slots[i].numel);
      if (b < e) run_range<K, T, S, SR>(slots[i], b, e, gs);
    }
  };
  // The runs are laid out before the region: a team smaller than asked for leaves runs without an
  // owner, which the others then take from the back.
  OwnedChunkRuns runs(nt);
  for (int t = 0; t < nt; ++t) runs.own(t, nchunks * t / nt, nchunks * (t + 1) / nt);
#pragma omp parallel num_threads(nt)
  {
    [[maybe_unused]] std::conditional_t<std::is_same<S, uint8_t>::value, KeepSubnormals, int> subnormals_kept{};
    const int me = omp_get_thread_num();
    int64_t ci;
    while (runs.take_front(me, ci)) run_chunk(ci);
    for (int k = 1; k < nt; ++k)
      while (runs.take_back((me + k) % nt, ci)) run_chunk(ci);
  }
}

// One kind's step. sdtype: the state's storage (a pair kStatePair allows; the wrapper checks); sr:
// stochastic rounding of bf16 stores (only where something is bf16).
template <OptKind K>
void step_kind(DType dtype, DType sdtype, bool sr, const OptSlot* slots, int64_t nslots, const float* gs) {
  dispatch_dtype(dtype, [&](auto ptag) {
    dispatch_dtype(sdtype, [&](auto stag) {
      using T = decltype(ptag);
      using S = decltype(stag);
      if constexpr (kStatePair<T, S>) {
        if constexpr (kAnyBf16<T, S>) {
          if (sr) return step_typed<K, T, S, true>(slots, nslots, gs);
        }
        step_typed<K, T, S, false>(slots, nslots, gs);
      }
    });
  });
}

// 8-bit block-wise state of float32 or bf16 parameters (OptSlot::qscale holds the block scales).
template <OptKind K>
void step_q8_kind(DType dtype, bool sr, const OptSlot* slots, int64_t nslots, const float* gs) {
  if (dtype == DType::F32) {
    if (sr) step_typed<K, float, uint8_t, true>(slots, nslots, gs);
    else step_typed<K, float, uint8_t, false>(slots, nslots, gs);
  } else if (dtype == DType::BF16) {
    if (sr) step_typed<K, bf16_t, uint8_t, true>(slots, nslots, gs);
    else step_typed<K, bf16_t, uint8_t, false>(slots, nslots, gs);
  }
}

// Each kind's kernels are compiled in a translation unit of their own (csrc/cpu_isa/<isa>_optim_<kind>.cpp,
// FASTNN_OPTIM_KIND_INSTANCES), which the build runs in parallel: together they are most of an ISA's
// compile time. Everywhere else the header only declares them.
#define FASTNN_OPTIM_KIND_TEMPLATES(spec, K)                                                           \
  spec template void step_kind<OptKind::K>(DType, DType, bool, const OptSlot*, int64_t, const float*); \
  spec template void step_q8_kind<OptKind::K>(DType, bool, const OptSlot*, int64_t, const float*);
#define FASTNN_OPTIM_KIND_INSTANCES(K)                       \
  namespace fastnn {                                         \
  inline namespace FASTNN_ISA_NS {                           \
  namespace optim_cpu {                                      \
  FASTNN_OPTIM_KIND_TEMPLATES(, K)                           \
  }                                                          \
  }                                                          \
  }
FASTNN_OPTIM_KIND_TEMPLATES(extern, Adam)
FASTNN_OPTIM_KIND_TEMPLATES(extern, RMSprop)
FASTNN_OPTIM_KIND_TEMPLATES(extern, SGD)
FASTNN_OPTIM_KIND_TEMPLATES(extern, Adagrad)

inline void step(OptKind kind, DType dtype, DType sdtype, bool sr, const OptSlot* slots, int64_t nslots,
                 const float* gs) {
  with_kind(kind, [&](auto K) { step_kind<decltype(K)::value>(dtype, sdtype, sr, slots, nslots, gs); });
}

inline void step_q8(OptKind kind, DType dtype, bool sr, const OptSlot* slots, int64_t nslots, const float* gs) {
  with_kind(kind, [&](auto K) { step_q8_kind<decltype(K)::value>(dtype, sr, slots, nslots, gs); });
}

inline const OptimCpuKernels& table() {
  static const OptimCpuKernels t{step, step_q8};
  return t;
}

}  // namespace optim_cpu
}  // namespace FASTNN_ISA_NS
}  // namespace fastnn

#pragma GCC pop_options
