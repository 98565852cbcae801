// The CPU kernels compiled for one instruction set (avx512_bf16: AVX-512 plus vdpbf16ps); cpu_isa.cpp
// picks a table at run time. bfloat16 whole-MLP chains run the native bf16 kernels
// (mlp_cpu_bf16_kernels.h: bf16 products, float32 sums); every other kernel is the avx512 one.
#include "isa_avx512_bf16.h"
#include "../linear_act/linear_act_cpu_kernels.h"
#include "../optim/optim_cpu_kernels.h"
#include "../mlp/mlp_cpu_kernels.h"

namespace fastnn {
const LinearActCpuKernels& linear_act_kernels_avx512_bf16() { return avx512_bf16::linear_act_cpu::table(); }
const OptimCpuKernels& optim_kernels_avx512_bf16() { return avx512_bf16::optim_cpu::table(); }
const MlpCpuKernels& mlp_kernels_avx512_bf16() { return avx512_bf16::mlp_cpu::table(); }
}  // namespace fastnn
