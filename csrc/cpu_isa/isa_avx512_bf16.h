// The compile settings of the avx512_bf16 kernel tables, first in each of its translation units
// (avx512_bf16.cpp and avx512_bf16_optim_*.cpp).
// System headers first: the target pragma below must only widen our own (namespaced) code.
// GCC 12 reports -Wmaybe-uninitialized inside its own AVX-512 intrinsics once they are inlined
// (the _mm*_undefined idiom; GCC bug 105593, fixed in 13): silenced for these headers' lines only.
#pragma once
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>

#include "../common/cpu_fp_env.h"  // before any target pragma: not ISA code

#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c,bmi2,prefer-vector-width=512")
#define FASTNN_ISA_NS avx512_bf16
#define FASTNN_VEC_BYTES 64
#define FASTNN_NATIVE_BF16 1
