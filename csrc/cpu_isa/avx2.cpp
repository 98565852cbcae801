// The CPU kernels compiled for one instruction set (avx2); cpu_isa.cpp picks a table at run time.
#include "isa_avx2.h"
#include "../linear_act/linear_act_cpu_kernels.h"
#include "../optim/optim_cpu_kernels.h"
#include "../mlp/mlp_cpu_kernels.h"

namespace fastnn {
const LinearActCpuKernels& linear_act_kernels_avx2() { return avx2::linear_act_cpu::table(); }
const OptimCpuKernels& optim_kernels_avx2() { return avx2::optim_cpu::table(); }
const MlpCpuKernels& mlp_kernels_avx2() { return avx2::mlp_cpu::table(); }
}  // namespace fastnn
