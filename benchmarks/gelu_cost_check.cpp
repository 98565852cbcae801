// What bounds the float GELU forward of csrc/common/fastmath.h (z Phi(z), Phi from one exp and a
// degree 4/5 rational with one division): the table's loop against two cost-only variants (their
// values are wrong) over 65536 floats, interleaved, one core, ns an element (median of 200 rounds):
//   B: the rational's division replaced by a multiply: what the division costs;
//   C: a degree-12 polynomial in place of the rational (the division-free form a fit on a clamped
//      range would need): whether dropping the division for more multiply-adds could pay.
//
//   cd csrc && g++ -O3 -march=native -std=c++20 -fno-math-errno -fno-trapping-math -I. \
//       ../benchmarks/gelu_cost_check.cpp -o /tmp/gelucost && /tmp/gelucost
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "common/fastmath.h"

using namespace fastnn::fm;

__attribute__((noinline)) void table_gelu(const float* __restrict x, float* __restrict y, int n) {
  for (int i = 0; i < n; ++i) y[i] = x[i] * normcdf_host(x[i]);
}

// normcdf_pdf_host's forward with p / q as p * q.
FASTNN_INLINE float cdf_no_division(float x) {
  const float p[5] = {5.0000000000e-01f, 4.3432101607e-01f, 1.8030259013e-01f, 3.9647497237e-02f,
                      3.9706458338e-03f};
  const float q[6] = {1.f, 1.6665269136e+00f, 1.1902974844e+00f, 4.6173045039e-01f, 9.9389448762e-02f,
                      9.9527761340e-03f};
  const float vmax = 12.7279220f;
  const float v = x < 0 ? -x : x;
  const float vc = v > vmax ? vmax : v;
  const float e = exp_neg_half_square_host(vc);
  float c = e * (horner(p, vc) * horner(q, vc));
  c = v > vmax ? 0.f : c;
  return x > 0 ? 1.f - c : c;
}
__attribute__((noinline)) void no_division(const float* __restrict x, float* __restrict y, int n) {
  for (int i = 0; i < n; ++i) y[i] = x[i] * cdf_no_division(x[i]);
}

// One exp and a degree-12 polynomial on a clamped range (placeholder coefficients).
FASTNN_INLINE float cdf_poly12(float x) {
  const float p[13] = {5e-01f, 4.3e-01f, 1.8e-01f, 3.9e-02f, 3.9e-03f, 1e-4f, 1e-5f,
                       1e-6f,  1e-7f,    1e-8f,    1e-9f,    1e-10f,   1e-11f};
  const float v = x < 0 ? -x : x;
  const float vc = v > 4.f ? 4.f : v;
  const float c = exp_neg_half_square_host(vc) * horner(p, vc);
  return x > 0 ? 1.f - c : c;
}
__attribute__((noinline)) void poly12(const float* __restrict x, float* __restrict y, int n) {
  for (int i = 0; i < n; ++i) y[i] = x[i] * cdf_poly12(x[i]);
}

int main() {
  const int n = 1 << 16;
  std::vector<float> x(n), y(n);
  std::mt19937 gen(1);
  std::normal_distribution<float> d(0.f, 1.5f);
  for (float& v : x) v = d(gen);
  void (*fs[3])(const float*, float*, int) = {table_gelu, no_division, poly12};
  const char* names[3] = {"A table GELU", "B no division (cost only)", "C degree-12 polynomial (cost only)"};
  std::vector<double> t[3];
  for (int r = 0; r < 200; ++r)
    for (int k = 0; k < 3; ++k) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int rep = 0; rep < 4; ++rep) fs[k](x.data(), y.data(), n);
      t[k].push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / (4.0 * n) * 1e9);
    }
  double med[3];
  for (int k = 0; k < 3; ++k) {
    std::sort(t[k].begin(), t[k].end());
    med[k] = t[k][t[k].size() / 2];
    printf("%-36s %.3f ns an element, %.3fx of A\n", names[k], med[k], med[k] / med[0]);
  }
}
