// The CPU kernels compiled for one instruction set (base); cpu_isa.cpp picks a table at run time.
#include "isa_base.h"
#include "../linear_act/linear_act_cpu_kernels.h"
#include "../optim/optim_cpu_kernels.h"
#include "../mlp/mlp_cpu_kernels.h"

namespace fastnn {
const LinearActCpuKernels& linear_act_kernels_base() { return base::linear_act_cpu::table(); }
const OptimCpuKernels& optim_kernels_base() { return base::optim_cpu::table(); }
const MlpCpuKernels& mlp_kernels_base() { return base::mlp_cpu::table(); }
}  // namespace fastnn
