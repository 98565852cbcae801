// The compile settings of the avx2 kernel tables, first in each of its translation units
// (avx2.cpp and avx2_optim_*.cpp).
#pragma once
#include "isa_prelude.h"

#pragma GCC target("avx2,fma,f16c,bmi2")
#define FASTNN_ISA_NS avx2
#define FASTNN_VEC_BYTES 32
#define FASTNN_FMA 1  // fused multiply-add in the target: fastmath.h's exact products use it
