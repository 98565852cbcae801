// Run-time choice of the CPU kernel tables (the build never assumes the build machine's CPU).
#pragma once
#include <string>
#include <vector>
#include "../linear_act/linear_act_cpu.h"
#include "../optim/optim_cpu.h"
#include "../mlp/mlp_cpu.h"

namespace fastnn {
const LinearActCpuKernels& linear_act_cpu_kernels();
const OptimCpuKernels& optim_cpu_kernels();
const MlpCpuKernels& mlp_cpu_kernels();
// "avx512_bf16", "avx512", "avx2" or "base" by default (the best this CPU runs); FASTNN_CPU_ISA in
// the environment caps the first choice, or selects "amx_bf16" (supported, not yet a default).
// "amx_bf16_emulated" (set_cpu_isa only, where avx512_bf16 runs) tests the AMX kernels without AMX.
std::string cpu_isa();
std::vector<std::string> cpu_isas_supported();
void set_cpu_isa(const std::string& isa);  // throws std::invalid_argument when unsupported
}  // namespace fastnn
