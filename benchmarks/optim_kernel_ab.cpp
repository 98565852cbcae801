// Same-process A/B of the CPU optimizer kernels of two source trees (benchmarks/optim_kernel_ab.sh
// builds it): each tree's kernels in their own namespace (FASTNN_ISA_NS renamed), timed alternately
// on the same buffers, so machine noise hits both. Prints the median of per-pair time ratios
// old / new (> 1: the new tree is faster) and its quartiles. Both trees must share OptSlot's layout.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "optim/optim_cpu.h"

namespace fastnn {
#define FASTNN_AB_DECL(K)                                                      \
  void run_old_##K(DType, DType, bool, const OptSlot*, int64_t);               \
  void run_new_##K(DType, DType, bool, const OptSlot*, int64_t);
FASTNN_AB_DECL(Adam)
FASTNN_AB_DECL(RMSprop)
FASTNN_AB_DECL(SGD)
FASTNN_AB_DECL(Adagrad)
}  // namespace fastnn

using namespace fastnn;
using Run = void (*)(DType, DType, bool, const OptSlot*, int64_t);

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atol(argv[1]) : (1 << 18);
  const int pairs = argc > 2 ? std::atoi(argv[2]) : 300;
  struct Case { const char* name; OptKind kind; int flags; DType sdtype; bool q8; };
  const Case cases[] = {
      {"adam", OptKind::Adam, 0, DType::F32, false},
      {"adam weight_decay", OptKind::Adam, kWeightDecay, DType::F32, false},
      {"adamw", OptKind::Adam, kWeightDecay | kDecoupled, DType::F32, false},
      {"adamw amsgrad", OptKind::Adam, kWeightDecay | kDecoupled | kAmsgrad, DType::F32, false},
      {"adam maximize", OptKind::Adam, kMaximize, DType::F32, false},
      {"adam bf16 state", OptKind::Adam, 0, DType::BF16, false},
      {"adam 8-bit state", OptKind::Adam, 0, DType::F32, true},
      {"rmsprop", OptKind::RMSprop, 0, DType::F32, false},
      {"rmsprop momentum maximize", OptKind::RMSprop, kMomentum | kMaximize, DType::F32, false},
      {"rmsprop 8-bit state", OptKind::RMSprop, 0, DType::F32, true},
      {"sgd momentum", OptKind::SGD, kMomentum, DType::F32, false},
      {"sgd momentum maximize", OptKind::SGD, kMomentum | kMaximize, DType::F32, false},
      {"sgd 8-bit state", OptKind::SGD, kMomentum, DType::F32, true},
      {"adagrad", OptKind::Adagrad, 0, DType::F32, false},
      {"adagrad maximize", OptKind::Adagrad, kMaximize, DType::F32, false},
  };
  std::vector<float> p(n), g(n), st[3] = {std::vector<float>(n), std::vector<float>(n), std::vector<float>(n)};
  std::vector<float> qs[3];
  for (auto& q : qs) q.resize(n / 256 + 1);
  for (int64_t i = 0; i < n; ++i) p[i] = std::sin(0.1f * i), g[i] = 1e-2f * std::cos(0.37f * i);
  std::printf("n = %ld, %d threads, %d pairs\n", long(n), omp_get_max_threads(), pairs);
  for (const Case& c : cases) {
    OptSlot s{};
    s.param = p.data();
    s.grad = g.data();
    s.numel = n;
    s.flags = c.flags;
    const double h[5] = {1e-3, 0.9, c.kind == OptKind::Adam ? 0.999 : 0.0, 0.01, 1e-8};
    const bool b[4] = {false, false, false, false};
    optim_rules::make_consts(c.kind, h, b, 10.0, s.k);
    for (int k = 0; k < 3; ++k) {
      std::fill(st[k].begin(), st[k].end(), 0.f);
      std::fill(qs[k].begin(), qs[k].end(), 0.f);
      s.state[k] = st[k].data();  // every state present: unused ones are never touched
      s.qscale[k] = qs[k].data();
    }
    Run run[2];
    switch (c.kind) {
      case OptKind::Adam: run[0] = run_old_Adam, run[1] = run_new_Adam; break;
      case OptKind::RMSprop: run[0] = run_old_RMSprop, run[1] = run_new_RMSprop; break;
      case OptKind::SGD: run[0] = run_old_SGD, run[1] = run_new_SGD; break;
      default: run[0] = run_old_Adagrad, run[1] = run_new_Adagrad; break;
    }
    auto timed = [&](int v) {
      const auto t0 = std::chrono::steady_clock::now();
      run[v](DType::F32, c.sdtype, c.q8, &s, 1);
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    for (int i = 0; i < 5; ++i) timed(0), timed(1);
    std::vector<double> r;
    for (int i = 0; i < pairs; ++i) {
      double t[2];
      const int first = i & 1;  // alternate which tree goes first
      t[first] = timed(first);
      t[1 - first] = timed(1 - first);
      r.push_back(t[0] / t[1]);
    }
    std::sort(r.begin(), r.end());
    std::printf("%-28s old/new %.3f  (quartiles %.3f %.3f)\n", c.name, r[r.size() / 2], r[r.size() / 4],
                r[3 * r.size() / 4]);
  }
}
