// The CPU kernels compiled for one instruction set (avx512); cpu_isa.cpp picks a table at run time.
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

#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,f16c,bmi2,prefer-vector-width=512")
#define FASTNN_ISA_NS avx512
#define FASTNN_VEC_BYTES 64
#include "../linear_act/linear_act_cpu_kernels.h"
#include "../optim/optim_cpu_kernels.h"
#include "../mlp/mlp_cpu_kernels.h"

namespace fastnn {
const LinearActCpuKernels& linear_act_kernels_avx512() { return avx512::linear_act_cpu::table(); }
const OptimCpuKernels& optim_kernels_avx512() { return avx512::optim_cpu::table(); }
const MlpCpuKernels& mlp_kernels_avx512() { return avx512::mlp_cpu::table(); }
}  // namespace fastnn
