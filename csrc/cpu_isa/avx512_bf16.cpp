// The CPU kernels compiled for one instruction set (avx512_bf16: AVX-512 plus vdpbf16ps); cpu_isa.cpp
// picks a table at run time. bfloat16 whole-MLP chains run the native bf16 kernels
// (mlp_cpu_bf16_kernels.h: bf16 products, float32 sums); every other kernel is the avx512 one.
// System headers first: the target pragma below must only widen our own (namespaced) code.
// GCC 12 reports -Wmaybe-uninitialized inside its own AVX-512 intrinsics once they are inlined
// (the _mm*_undefined idiom; GCC bug 105593, fixed in 13): silenced for these headers' lines only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>

#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c,bmi2,prefer-vector-width=512")
#define FASTNN_ISA_NS avx512_bf16
#define FASTNN_VEC_BYTES 64
#define FASTNN_NATIVE_BF16 1
#include "../linear_act/linear_act_cpu_kernels.h"
#include "../optim/optim_cpu_kernels.h"
#include "../mlp/mlp_cpu_kernels.h"

namespace fastnn {
const LinearActCpuKernels& linear_act_kernels_avx512_bf16() { return avx512_bf16::linear_act_cpu::table(); }
const OptimCpuKernels& optim_kernels_avx512_bf16() { return avx512_bf16::optim_cpu::table(); }
const MlpCpuKernels& mlp_kernels_avx512_bf16() { return avx512_bf16::mlp_cpu::table(); }
}  // namespace fastnn
