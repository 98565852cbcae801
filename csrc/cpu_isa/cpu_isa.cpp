#include "cpu_isa.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <vector>

namespace fastnn {
namespace {

enum Isa { kBase = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3, kCount = 4 };
const char* kNames[] = {"base", "avx2", "avx512", "avx512_bf16"};

bool supported(int isa) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (isa == kAvx512Bf16) return supported(kAvx512) && __builtin_cpu_supports("avx512bf16");
  if (isa == kAvx512)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("fma");
  if (isa == kAvx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  if (isa != kBase) return false;
#endif
  return true;
}

int parse(const std::string& s) {
  for (int i = 0; i < kCount; ++i)
    if (s == kNames[i]) return i;
  return -1;
}

int initial_isa() {
  int best = kBase;
  for (int i = 0; i < kCount; ++i)
    if (supported(i)) best = i;
  if (const char* env = std::getenv("FASTNN_CPU_ISA")) {
    int cap = parse(env);
    if (cap >= 0 && cap < best) best = cap;
  }
  return best;
}

std::atomic<int>& active() {
  static std::atomic<int> a{initial_isa()};
  return a;
}

}  // namespace

const LinearActCpuKernels& linear_act_cpu_kernels() {
  switch (active().load(std::memory_order_relaxed)) {
#if defined(__x86_64__)
    case kAvx512Bf16: return linear_act_kernels_avx512_bf16();
    case kAvx512: return linear_act_kernels_avx512();
    case kAvx2: return linear_act_kernels_avx2();
#endif
    default: return linear_act_kernels_base();
  }
}

const OptimCpuKernels& optim_cpu_kernels() {
  switch (active().load(std::memory_order_relaxed)) {
#if defined(__x86_64__)
    case kAvx512Bf16: return optim_kernels_avx512_bf16();
    case kAvx512: return optim_kernels_avx512();
    case kAvx2: return optim_kernels_avx2();
#endif
    default: return optim_kernels_base();
  }
}

const MlpCpuKernels& mlp_cpu_kernels() {
  switch (active().load(std::memory_order_relaxed)) {
#if defined(__x86_64__)
    case kAvx512Bf16: return mlp_kernels_avx512_bf16();
    case kAvx512: return mlp_kernels_avx512();
    case kAvx2: return mlp_kernels_avx2();
#endif
    default: return mlp_kernels_base();
  }
}

std::string cpu_isa() { return kNames[active().load()]; }

std::vector<std::string> cpu_isas_supported() {
  std::vector<std::string> out;
  for (int i = 0; i < kCount; ++i)
    if (supported(i)) out.push_back(kNames[i]);
  return out;
}

void set_cpu_isa(const std::string& isa) {
  int i = parse(isa);
  if (i < 0 || !supported(i))
    throw std::invalid_argument("fastnn.set_cpu_isa: '" + isa + "' is not supported on this CPU");
  active().store(i);
}

}  // namespace fastnn
