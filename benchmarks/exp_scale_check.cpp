// Checks the float exp_host of csrc/common/fastmath.h, which scales e^r by 2^n with one add to the
// exponent field, against the two-multiply scaling it replaced (p 2^(n/2) 2^(n - n/2), kept below):
// every float in [-200, 200] (about 2.3e9 values), NaN and the infinities, bit for bit; then the
// sigmoid loop 1 / (1 + e^-x) over 65536 floats with each, one core, ns an element.
// Expected: one mismatch, x = -87.3365479 (e^x is denormal: the two-multiply form kept it, the new
// one flushes it as it flushes everything below).
//
//   cd csrc && g++ -O3 -march=native -std=c++20 -fno-math-errno -fno-trapping-math -fwrapv -I. \
//       ../benchmarks/exp_scale_check.cpp -o /tmp/expcheck && /tmp/expcheck    (about 15 s)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "common/fastmath.h"

using namespace fastnn::fm;

static float exp_two_multiplies(float x) {
  const float hi = 88.7228394f, lo = -87.3365479f;
  const float xc = x > hi ? hi : (x < lo ? lo : x);
  float fn;
  float p = exp_poly(xc, fn);
  const int32_t n = (int32_t)fn, n1 = n >> 1, n2 = n - n1;
  p = p * as_float((n1 + 127) << 23) * as_float((n2 + 127) << 23);
  p = x > hi ? INFINITY : p;
  return x < lo ? 0.f : p;
}

constexpr int kN = 65536;
__attribute__((noinline)) void sigmoid_old(const float* __restrict x, float* __restrict y) {
  for (int i = 0; i < kN; ++i) y[i] = 1.f / (1.f + exp_two_multiplies(-x[i]));
}
__attribute__((noinline)) void sigmoid_new(const float* __restrict x, float* __restrict y) {
  for (int i = 0; i < kN; ++i) y[i] = 1.f / (1.f + exp_host(-x[i]));
}

template <class F>
double median_ns(F f) {
  std::vector<double> t;
  for (int r = 0; r < 31; ++r) {
    const auto a = std::chrono::steady_clock::now();
    for (int k = 0; k < 10; ++k) f();
    t.push_back(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - a).count() / (10.0 * kN));
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

int main() {
  long checked = 0, differ = 0;
  for (uint64_t u = 0; u < (uint64_t(1) << 32); ++u) {
    const uint32_t b = uint32_t(u);
    float x;
    std::memcpy(&x, &b, 4);
    if (!(std::fabs(x) <= 200.f) && !std::isnan(x) && !std::isinf(x)) continue;
    const float a = exp_two_multiplies(x), c = exp_host(x);
    uint32_t ba, bc;
    std::memcpy(&ba, &a, 4);
    std::memcpy(&bc, &c, 4);
    ++checked;
    if (ba != bc && !(std::isnan(a) && std::isnan(c))) {
      if (differ < 10) std::printf("x = %.9g: two multiplies %.9g, one add %.9g\n", x, a, c);
      ++differ;
    }
  }
  std::printf("checked %ld floats, %ld differ\n", checked, differ);
  std::vector<float> x(kN), y(kN);
  for (int i = 0; i < kN; ++i) x[i] = -20.f + 40.f * i / kN;
  for (int r = 0; r < 3; ++r)
    std::printf("sigmoid loop: two multiplies %.3f, one add %.3f ns an element\n",
                median_ns([&] { sigmoid_old(x.data(), y.data()); }), median_ns([&] { sigmoid_new(x.data(), y.data()); }));
  return differ > 1;
}
