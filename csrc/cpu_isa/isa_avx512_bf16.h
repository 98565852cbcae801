// The compile settings of the avx512_bf16 kernel tables, first in each of its translation units
// (avx512_bf16.cpp and avx512_bf16_optim_*.cpp).
#pragma once
#include "isa_prelude.h"

#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c,bmi2,prefer-vector-width=512")
#define FASTNN_ISA_NS avx512_bf16
#define FASTNN_VEC_BYTES 64
#define FASTNN_FMA 1  // fused multiply-add in the target: fastmath.h's exact products use it
#define FASTNN_NATIVE_BF16 1
