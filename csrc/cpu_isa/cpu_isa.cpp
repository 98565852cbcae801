#include "cpu_isa.h"

#include "../common/path_choice.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <vector>

#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

// Which per-ISA tables are linked in: all on x86-64, unless setup.py's FASTNN_CPU_TABLES (base or
// native) left some out (FASTNN_CPU_NO_<TABLE>). The amx_bf16 tables call the avx512_bf16 one.
#if defined(__x86_64__) && !defined(FASTNN_CPU_NO_AVX2)
#define FASTNN_TABLE_AVX2 1
#else
#define FASTNN_TABLE_AVX2 0
#endif
#if defined(__x86_64__) && !defined(FASTNN_CPU_NO_AVX512)
#define FASTNN_TABLE_AVX512 1
#else
#define FASTNN_TABLE_AVX512 0
#endif
#if FASTNN_TABLE_AVX512 && !defined(FASTNN_CPU_NO_AVX512_BF16)
#define FASTNN_TABLE_AVX512_BF16 1
#else
#define FASTNN_TABLE_AVX512_BF16 0
#endif
#if FASTNN_TABLE_AVX512_BF16 && !defined(FASTNN_CPU_NO_AMX_BF16)
#define FASTNN_TABLE_AMX_BF16 1
#else
#define FASTNN_TABLE_AMX_BF16 0
#endif

namespace fastnn {
namespace {

// Ordered by preference; kDefaultMax is the best table chosen without being asked for. The amx_bf16
// table is compiled and tested (through its emulation) but no session with an AMX CPU has measured
// it yet: it runs only when FASTNN_CPU_ISA or set_cpu_isa names it. amx_bf16_emulated is its test
// vehicle (scalar tile emulation, slow), never a default and not listed among the supported tables.
enum Isa { kBase = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3, kAmxBf16 = 4, kAmxBf16Emulated = 5, kCount = 6 };
const char* kNames[] = {"base", "avx2", "avx512", "avx512_bf16", "amx_bf16", "amx_bf16_emulated"};
constexpr int kDefaultMax = kAvx512Bf16;

// AMX-BF16 and AMX-TILE (CPUID.7.0:EDX bits 22 and 24), the OS managing the tile state (XCR0 bits 17
// and 18), and Linux's permission for this process to use it (arch_prctl ARCH_REQ_XCOMP_PERM for
// XFEATURE_XTILEDATA; without it the first tile instruction faults). Asked once.
bool amx_usable() {
#if defined(__x86_64__)
  static const bool ok = [] {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 22)) || !(d & (1u << 24))) return false;
    unsigned a1, b1, c1, d1;
    if (!__get_cpuid(1, &a1, &b1, &c1, &d1) || !(c1 & (1u << 27))) return false;  // OSXSAVE: xgetbv works
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17)) return false;
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
#else
  return false;
#endif
}

// The CPU runs table `isa` and the build linked it in.
bool supported(int isa) {
#if defined(__x86_64__)
  __builtin_cpu_init();
#endif
  switch (isa) {
#if FASTNN_TABLE_AMX_BF16
    case kAmxBf16Emulated: return supported(kAvx512Bf16);
    case kAmxBf16: return supported(kAvx512Bf16) && amx_usable();
#endif
#if FASTNN_TABLE_AVX512_BF16
    case kAvx512Bf16: return supported(kAvx512) && __builtin_cpu_supports("avx512bf16");
#endif
#if FASTNN_TABLE_AVX512
    case kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("fma");
#endif
#if FASTNN_TABLE_AVX2
    case kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    case kBase: return true;
    default: return false;
  }
}

int parse(const std::string& s) {
  for (int i = 0; i < kCount; ++i)
    if (s == kNames[i]) return i;
  return -1;
}

// The best default table, capped by FASTNN_CPU_ISA; FASTNN_CPU_ISA naming a supported non-default
// table (amx_bf16) selects it.
int initial_isa() {
  int best = kBase;
  for (int i = 0; i <= kDefaultMax; ++i)
    if (supported(i)) best = i;
  if (const char* env = std::getenv("FASTNN_CPU_ISA")) {
    int want = parse(env);
    if (want >= 0 && (want < best || (want > kDefaultMax && supported(want)))) best = want;
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
#if FASTNN_TABLE_AVX512_BF16
    case kAmxBf16:
    case kAmxBf16Emulated:
    case kAvx512Bf16: return linear_act_kernels_avx512_bf16();
#endif
#if FASTNN_TABLE_AVX512
    case kAvx512: return linear_act_kernels_avx512();
#endif
#if FASTNN_TABLE_AVX2
    case kAvx2: return linear_act_kernels_avx2();
#endif
    default: return linear_act_kernels_base();
  }
}

const OptimCpuKernels& optim_cpu_kernels() {
  switch (active().load(std::memory_order_relaxed)) {
#if FASTNN_TABLE_AVX512_BF16
    case kAmxBf16:
    case kAmxBf16Emulated:
    case kAvx512Bf16: return optim_kernels_avx512_bf16();
#endif
#if FASTNN_TABLE_AVX512
    case kAvx512: return optim_kernels_avx512();
#endif
#if FASTNN_TABLE_AVX2
    case kAvx2: return optim_kernels_avx2();
#endif
    default: return optim_kernels_base();
  }
}

const MlpCpuKernels& mlp_cpu_kernels() {
  switch (active().load(std::memory_order_relaxed)) {
#if FASTNN_TABLE_AMX_BF16
    case kAmxBf16: return mlp_kernels_amx_bf16();
    case kAmxBf16Emulated: return mlp_kernels_amx_bf16_emulated();
#endif
#if FASTNN_TABLE_AVX512_BF16
    case kAvx512Bf16: return mlp_kernels_avx512_bf16();
#endif
#if FASTNN_TABLE_AVX512
    case kAvx512: return mlp_kernels_avx512();
#endif
#if FASTNN_TABLE_AVX2
    case kAvx2: return mlp_kernels_avx2();
#endif
    default: return mlp_kernels_base();
  }
}

std::string cpu_isa() { return kNames[active().load()]; }

std::vector<std::string> cpu_isas_supported() {
  std::vector<std::string> out;
  for (int i = 0; i < kCount; ++i)
    if (i != kAmxBf16Emulated && supported(i)) out.push_back(kNames[i]);
  return out;
}

void set_cpu_isa(const std::string& isa) {
  int i = parse(isa);
  if (i < 0 || !supported(i))
    throw std::invalid_argument("fastnn.set_cpu_isa: '" + isa + "' is not supported on this CPU");
  active().store(i);
  bump_path_choice_generation();  // the kernel table is part of every CPU path choice's key
}

}  // namespace fastnn
