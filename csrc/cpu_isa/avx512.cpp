// The CPU kernels compiled for one instruction set (avx512); cpu_isa.cpp picks a table at run time.
#include "isa_avx512.h"
#include "../linear_act/linear_act_cpu_kernels.h"
#include "../optim/optim_cpu_kernels.h"
#include "../mlp/mlp_cpu_kernels.h"

namespace fastnn {
const LinearActCpuKernels& linear_act_kernels_avx512() { return avx512::linear_act_cpu::table(); }
const OptimCpuKernels& optim_kernels_avx512() { return avx512::optim_cpu::table(); }
const MlpCpuKernels& mlp_kernels_avx512() { return avx512::mlp_cpu::table(); }
}  // namespace fastnn
