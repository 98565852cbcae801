// The 8-bit optimizer state's block codec and block update on one core, outside torch: checks that
// the vector codecs (AVX-512, or AVX2 with -DQ8_AVX2; the normal-float and the subnormal form) give
// the scalar codec's bits on random and special blocks, and the scalar codec its definition (the
// subnormal product, computed in double); then times one Adam block update in cache with each form,
// on ordinary blocks and on blocks half of whose codes are subnormal, and the divider's share.
//
//   TORCH_INCLUDE=$(python -c "import torch.utils.cpp_extension as c; print(c.include_paths()[0])")
//   cd csrc && g++ -O3 -fopenmp -fno-math-errno -fno-trapping-math -std=c++17 -I. -I"$TORCH_INCLUDE" ../benchmarks/q8_codec_micro.cpp -o /tmp/q8micro
//   /tmp/q8micro          (add -DQ8_AVX2 for the AVX2 codec)
//
// Numbers in benchmarks/RESULTS.md ("8-bit state: vector codec").
// GCC 12 reports -Wmaybe-uninitialized inside its own AVX-512 intrinsics once they are inlined
// (the _mm*_undefined idiom; GCC bug 105593, fixed in 13): silenced for these headers' lines only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <random>
#include <vector>
#ifdef Q8_AVX2
#pragma GCC target("avx2,fma,f16c,bmi2")
#define FASTNN_ISA_NS avx2
#define FASTNN_VEC_BYTES 32
#else
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,f16c,bmi2,prefer-vector-width=512")
#define FASTNN_ISA_NS avx512
#define FASTNN_VEC_BYTES 64
#endif
#include "optim/optim_cpu_kernels.h"

using namespace fastnn;
using namespace fastnn::FASTNN_ISA_NS::optim_rules;
using namespace fastnn::FASTNN_ISA_NS::optim_cpu;

template <class F> double best_ns(int64_t n, int reps, F&& f) {
  double best = 1e9;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    for (int it = 0; it < 20; ++it) f();
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 20 / n * 1e9;
    best = t < best ? t : best;
  }
  return best;
}

int main() {
  std::mt19937 r(1);
  std::normal_distribution<float> nd;
  long bad[2] = {0, 0}, ref_bad = 0, bad_sr = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    float v[256];
    uint8_t a[256], b[256];
    const int kind = trial % 6;
    for (int j = 0; j < 256; ++j) {
      const uint32_t u = r();
      float f;
      if (kind == 0) f = __builtin_bit_cast(float, u);                                    // any bits
      else if (kind == 1) f = std::ldexp(float(int(u % 2000) - 1000), -int(r() % 40));
      else if (kind == 2) f = nd(r) * std::pow(10.f, float(int(r() % 30) - 15));         // 30 decades
      else if (kind == 3) f = r() % 4 ? std::ldexp(1.f + (r() % 16) / 16.f, -int(r() % 20)) : 0.f;  // ties
      else if (kind == 4) {
        const uint32_t t = r() % 8;
        f = t == 0 ? NAN : t == 1 ? -INFINITY : t == 2 ? INFINITY : t == 3 ? -0.f : t == 4 ? 1e-40f * (r() % 3) : nd(r);
      } else f = std::ldexp(1.f, -int(r() % 30)) * (1 + (r() % 64) / 64.f) * ((r() & 1) ? -1 : 1);
      v[j] = f;
    }
    if (kind == 3) v[0] = 1.875f;
    const int n = trial % 7 == 0 ? int(r() % 256) + 1 : 256;
    for (int sg = 0; sg < 2; ++sg) {
      float w[256], d1[256], d2[256];
      for (int j = 0; j < n; ++j) w[j] = sg ? v[j] : std::fabs(v[j]);
      uint32_t am = 0;
      for (int j = 0; j < n; ++j) am = q8_amax_step(am, w[j]);
      const float s1 = sg ? q8_encode_block<true>(w, n, a) : q8_encode_block<false>(w, n, a);
      // The definition: |v| inv 2^(Emax-127) rounded once to float32 (the double product is exact).
      float inv;
      const float sc = sg ? q8_block_scale<true>(am, &inv) : q8_block_scale<false>(am, &inv);
      if (inv != 0.f)
        for (int j = 0; j < n; ++j) {
          if (!std::isfinite(w[j])) continue;
          const double x = double(std::fabs(w[j])) * double(inv) * (sg ? 0x1p-112 : 0x1p-96);
          uint32_t c = (__builtin_bit_cast(uint32_t, float(x)) + 0x80000u) >> 20;
          c = c < (sg ? 0x7Fu : 0xFEu) ? c : (sg ? 0x7Fu : 0xFEu);
          ref_bad += c != (a[j] & (sg ? 0x7Fu : 0xFFu));
        }
      (void)sc;
      uint32_t ab = 0;
      for (int j = 0; j < n; ++j) ab = q8_abs_bits_max(ab, w[j]);
      // stochastic rounding: the vector codecs against the scalar one with the same random adds
      uint32_t add[256];
      for (int j = 0; j < n; ++j) add[j] = sr_q8_add(r() & 0xffffu);
      if (trial % 5 == 0) add[0] = sr_q8_add(0xffffu), add[n - 1] = sr_q8_add(0);  // the extremes
      uint8_t sa[256], sb[256];
      float sinv;
      const float ssc = sg ? q8_block_scale<true>(q8_finite_amax(ab, w, n), &sinv) : q8_block_scale<false>(q8_finite_amax(ab, w, n), &sinv);
      for (int j = 0; j < n; ++j)
        sa[j] = sg ? q8_encode_value<true>(w[j], ssc, sinv, add[j]) : q8_encode_value<false>(w[j], ssc, sinv, add[j]);
      for (int sub = 0; sub < 2; ++sub) {
        const float s3 = sg ? q8_encode_run<true, true>(w, n, sb, ab, sub, add) : q8_encode_run<false, true>(w, n, sb, ab, sub, add);
        bad_sr += memcmp(sa, sb, n) != 0 || __builtin_bit_cast(uint32_t, s3) != __builtin_bit_cast(uint32_t, ssc);
      }
      for (int sub = 0; sub < 2; ++sub) {
        // the subnormal encoder on every block, also where subnormal x' arise
        const float s2 = sg ? q8_encode_run<true>(w, n, b, ab, sub) : q8_encode_run<false>(w, n, b, ab, sub);
        if (memcmp(a, b, n) || __builtin_bit_cast(uint32_t, s1) != __builtin_bit_cast(uint32_t, s2)) ++bad[sub];
        for (int j = 0; j < n; ++j) d1[j] = s1 * (sg ? q8_decode<true>(a[j]) : q8_decode<false>(a[j]));
        if (sg) q8_decode_run<true>(a, s1, n, d2, sub);
        else q8_decode_run<false>(a, s1, n, d2, sub);
        for (int j = 0; j < n; ++j) bad[sub] += __builtin_bit_cast(uint32_t, d1[j]) != __builtin_bit_cast(uint32_t, d2[j]);
      }
    }
  }
  printf("vector codec vs scalar codec, 20000 blocks of each kind: %ld mismatches (normal-float codec), %ld "
         "(subnormal codec), %ld (stochastic rounding, both codecs); scalar codec vs its definition in double: %ld\n",
         bad[0], bad[1], bad_sr, ref_bad);

  const int64_t n = 16384;  // in L2
  std::vector<float> p(n), g(n), mf(n), vf(n);
  std::vector<uint8_t> m(n), v(n);
  std::vector<float> ms(n / 256, 1e-3f), vs(n / 256, 1e-6f);
  for (int64_t i = 0; i < n; ++i) p[i] = nd(r), g[i] = nd(r) * 1e-2f, m[i] = r() & 0x7f, v[i] = r() % 200,
                                  mf[i] = nd(r) * 1e-3f, vf[i] = std::fabs(nd(r)) * 1e-6f;
  const AdamConsts<float> c{0, 1, 0.1f, 0.9f, true, 0.999f, 0.001f, 0.1f, -10.f, 1e-8f, -1e-3f};
  uint8_t* q[3] = {m.data(), v.data(), nullptr};
  float* qs[3] = {ms.data(), vs.data(), nullptr};
  // Both codecs, alternated; then blocks whose second halves are 10^6 below their maxima (half the
  // codes subnormal; the calibration's case in optim.cpp), where a CPU with subnormal assists loses.
  double q8[2][2] = {{1e9, 1e9}, {1e9, 1e9}};
  std::vector<float> g_half(g);
  for (int64_t i = 0; i < n; ++i) if (i % 256 >= 128) g_half[i] *= 1e-6f;
  for (int round = 0; round < 5; ++round)
    for (int half = 0; half < 2; ++half)
      for (int sub = 0; sub < 2; ++sub)
        q8[half][sub] = std::min(q8[half][sub], best_ns(n, 10, [&] {
          for (int64_t b0 = 0; b0 < n; b0 += 256)
            update_block_q8<OptKind::Adam, CpuIO>(0, c, p.data(), (half ? g_half : g).data(), q, qs, b0, 256, 1.f, NearestStore(), sub);
        }));
  const double f32 = best_ns(n, 30, [&] {
    for (int64_t i = 0; i < n; ++i) update_element<OptKind::Adam, CpuIO>(0, c, p.data(), g.data(), mf.data(), vf.data(), vf.data(), i, 1.f);
  });
  float* a = mf.data();
  const float* b = g.data();
  const double sq = best_ns(n, 30, [&] {
    for (int64_t i = 0; i < n; ++i) a[i] = __builtin_sqrtf(std::fabs(a[i]) + 1.f);
  });
  const double dv = best_ns(n, 30, [&] {
    for (int64_t i = 0; i < n; ++i) a[i] = a[i] / (b[i] + 2.f);
  });
  printf("Adam, one thread, in cache: 8-bit state %.3f ns/param (subnormal codec %.3f; half the codes subnormal: "
         "%.3f and %.3f), float32 state %.3f; square root %.3f, division %.3f ns/value (the rule has one root and "
         "one division; the bias correction is multiply-adds)\n", q8[0][0], q8[0][1], q8[1][0], q8[1][1], f32, sq, dv);
}
