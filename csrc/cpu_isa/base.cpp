// The CPU kernels compiled for one instruction set (base); cpu_isa.cpp picks a table at run time.
// System headers first: the target pragma below must only widen our own (namespaced) code.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>

// Baseline x86-64 (SSE2) or whatever the compiler targets by default: runs everywhere.
#define FASTNN_ISA_NS base
#define FASTNN_VEC_BYTES 16
#include "../linear_act/linear_act_cpu_kernels.h"
#include "../optim/optim_cpu_kernels.h"
#include "../mlp/mlp_cpu_kernels.h"

namespace fastnn {
const LinearActCpuKernels& linear_act_kernels_base() { return base::linear_act_cpu::table(); }
const OptimCpuKernels& optim_kernels_base() { return base::optim_cpu::table(); }
const MlpCpuKernels& mlp_kernels_base() { return base::mlp_cpu::table(); }
}  // namespace fastnn
