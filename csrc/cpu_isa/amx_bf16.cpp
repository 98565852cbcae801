// The amx_bf16 kernel tables: the avx512_bf16 kernels with the bf16 whole-MLP products on AMX tiles
// (mlp_cpu_amx_gemm.h). Two tables from one source: "amx_bf16" with the tile instructions (CPUs with
// AMX-BF16, after the kernel granted the tile-data permission: cpu_isa.cpp) and "amx_bf16_emulated",
// the same kernels over an emulation of the tiles in plain C++, so that their layout and padding are
// tested on any CPU with AVX512_BF16 (slow: for tests only). linear_act and the optimizers have no
// AMX kernels (linear_act's bf16 GEMMs are torch's, which use AMX itself); those entries are the
// avx512_bf16 table's. Float32 and float64 chains go to the avx512_bf16 table too.
#include "isa_prelude.h"

#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c,bmi2,amx-tile,amx-bf16,prefer-vector-width=512")
#define FASTNN_ISA_NS amx_bf16
#define FASTNN_VEC_BYTES 64
#define FASTNN_FMA 1  // fused multiply-add in the target: fastmath.h's exact products use it
#define FASTNN_NATIVE_BF16 1
#define FASTNN_AMX_HW 1
#define FASTNN_MLP_BF16_ONLY 1
#include "../mlp/mlp_cpu_kernels.h"
#include "../mlp/mlp_cpu_amx_gemm.h"

namespace fastnn {
inline namespace FASTNN_ISA_NS {
namespace mlp_cpu {

template <class Tiles>
void amx_forward(DType d, const void* x, void* out, const MlpCpuLayer* layers, int L, int64_t M) {
  if (d != DType::BF16) return mlp_kernels_avx512_bf16().forward(d, x, out, layers, L, M);
  bf16_native::forward<bf16_native::AmxMm<Tiles>>((const bf16_t*)x, (bf16_t*)out, layers, L, M);
}

template <class Tiles>
void amx_backward(DType d, const void* g, const void* x, const MlpCpuLayer* layers, int L, int64_t M, void* gi,
                  void* const* gw, void* const* gb) {
  if (d != DType::BF16) return mlp_kernels_avx512_bf16().backward(d, g, x, layers, L, M, gi, gw, gb);
  bf16_native::backward<bf16_native::AmxMm<Tiles>>((const bf16_t*)g, (const bf16_t*)x, layers, L, M, (bf16_t*)gi,
                                                   (bf16_t* const*)gw, (bf16_t* const*)gb);
}

template <class Tiles>
const MlpCpuKernels& amx_table() {
  static const MlpCpuKernels t{amx_forward<Tiles>, amx_backward<Tiles>};
  return t;
}

}  // namespace mlp_cpu
}  // namespace FASTNN_ISA_NS

const MlpCpuKernels& mlp_kernels_amx_bf16() { return amx_bf16::mlp_cpu::amx_table<amx_bf16::amx::AmxHw>(); }
const MlpCpuKernels& mlp_kernels_amx_bf16_emulated() { return amx_bf16::mlp_cpu::amx_table<amx_bf16::amx::AmxEmu>(); }
}  // namespace fastnn
