// Checks div_by_const (csrc/optim/optim_functors.h), which replaces Adam's sqrt(v) / bc2_sqrt
// division by three multiply-adds, against the division itself:
//   float:  every non-negative float a (0 .. inf) for 150 divisors b (the bc2_sqrt of 9 beta2 x 9
//           steps, random ones down to 2^-27, and edge mantissas), then 2^30 random (a, b) pairs;
//   double: 2^28 random pairs with a over [2^-537, 2^512] (sqrt of any positive double) and b in
//           [2^-27, 1].
// Mismatches are counted inside the range the rule can see (a = sqrt(v): 0, [2^-75, 2^64] and inf
// in float) and, for information, outside it, where the theorem's conditions fail: below about 2^-100
// the remainder underflows, and above 2^64 a small divisor overflows the quotient.
//
//   cd csrc && g++ -O3 -march=native -fopenmp -fno-math-errno -ffp-contract=off -std=c++17 -I. ../benchmarks/adam_div_check.cpp -o /tmp/divcheck
//   /tmp/divcheck      (about 90 s on 2 cores; exits 1 on any in-range mismatch)
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <utility>
#include <vector>
#include <omp.h>
#include "optim/optim_functors.h"

using fastnn::optim_rules::div_by_const;

template <class T, class U> static U bits(T x) { U u; std::memcpy(&u, &x, sizeof u); return u; }

// All a in [0, inf] for one divisor: {in range, outside range} mismatches.
static void sweep(float b, long* in, long* out) {
  const float nb = -1.f / b;
  long i0 = 0, o0 = 0;
#pragma omp parallel for reduction(+ : i0, o0) schedule(static)
  for (int64_t hi = 0; hi <= (0x7f800000 >> 12); ++hi) {
    float a[4096], q[4096], ref[4096];
    for (int j = 0; j < 4096; ++j) { uint32_t u = uint32_t(hi << 12 | j); std::memcpy(&a[j], &u, 4); }
    for (int j = 0; j < 4096; ++j) q[j] = div_by_const(a[j], b, nb);
    for (int j = 0; j < 4096; ++j) ref[j] = a[j] / b;
    for (int j = 0; j < 4096; ++j) {
      const uint32_t u = bits<float, uint32_t>(a[j]);
      if (u > 0x7f800000u) continue;
      if (bits<float, uint32_t>(q[j]) == bits<float, uint32_t>(ref[j])) continue;
      const bool inside = u == 0 || u == 0x7f800000u || (u >= 0x1a000000u && u <= 0x5f800000u);  // 2^-75 .. 2^64
      (inside ? i0 : o0) += 1;
    }
  }
  *in += i0, *out += o0;
}

// Mismatches over rounds x 1024 random (a, b) pairs from make(generator).
template <class T, class U, class Make> static long random_pairs(int64_t rounds, uint64_t seed, Make make) {
  long bad = 0;
#pragma omp parallel reduction(+ : bad)
  {
    std::mt19937_64 g(seed + 17 * (uint64_t)omp_get_thread_num());
#pragma omp for
    for (int64_t k = 0; k < rounds; ++k)
      for (int j = 0; j < 1024; ++j) {
        const auto [a, b] = make(g);
        bad += bits<T, U>(div_by_const(a, b, T(-1) / b)) != bits<T, U>(a / b);
      }
  }
  return bad;
}

int main() {
  std::vector<float> bs;
  for (double b2 : {0.999, 0.99, 0.95, 0.9, 0.98, 0.9999, 0.5, 0.0, 0.999999})
    for (int t : {1, 2, 3, 7, 10, 100, 1000, 12345, 1000000}) bs.push_back(float(std::pow(1 - std::pow(b2, t), 0.5)));
  std::mt19937_64 r(7);
  for (int i = 0; i < 64; ++i) bs.push_back(std::ldexp(1.f + float(r() & 0x7fffff) / 8388608.f, -int(r() % 28)));
  for (float b : {std::nextafter(1.f, 0.f), 1e-8f, 0.5f, 0.75f, std::nextafter(0.5f, 1.f)}) bs.push_back(b);
  long in = 0, out = 0;
  for (float b : bs) sweep(b, &in, &out);
  printf("float, %zu divisors x every a in [0, inf]: %ld mismatches in range, %ld outside it\n", bs.size(), in, out);

  long fin = random_pairs<float, uint32_t>(1 << 20, 1234, [](std::mt19937_64& g) {
    const uint64_t x = g();
    const float b = std::ldexp(1.f + float(x & 0x7fffff) / 8388608.f, -int((x >> 23) % 28));
    const uint32_t au = 0x1a000000u + uint32_t((x >> 32) % (0x5f800000u - 0x1a000000u + 1));  // 2^-75 .. 2^64
    float a;
    std::memcpy(&a, &au, 4);
    return std::pair<float, float>(a, b > 1.f ? 1.f : b);
  });
  printf("float, 2^30 random (a, b) pairs: %ld mismatches\n", fin);

  const long din = random_pairs<double, uint64_t>(1 << 18, 99, [](std::mt19937_64& g) {
    const uint64_t x = g(), y = g();
    const double b = std::ldexp(1.0 + double(x >> 12) / 4503599627370496.0, -int(y % 28));
    const double a = std::ldexp(1.0 + double(y >> 12) / 4503599627370496.0, int((x & 0x3ff) % 1049) - 537);
    return std::pair<double, double>(a, b);
  });
  printf("double, 2^28 random (a, b) pairs: %ld mismatches\n", din);
  for (double a : {0.0, -0.0, double(INFINITY), double(NAN)}) {
    const float af = float(a);
    const bool ok = std::isnan(a) ? std::isnan(div_by_const(af, 0.3f, -1.f / 0.3f))
                                  : bits<float, uint32_t>(div_by_const(af, 0.3f, -1.f / 0.3f)) == bits<float, uint32_t>(af / 0.3f);
    printf("a = %g: %s\n", a, ok ? "ok" : "MISMATCH");
    fin += !ok;
  }
  return in || fin || din ? 1 : 0;
}
