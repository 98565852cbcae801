// The compile settings of the avx512 kernel tables, first in each of its translation units
// (avx512.cpp and avx512_optim_*.cpp).
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

#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,f16c,bmi2,prefer-vector-width=512")
#define FASTNN_ISA_NS avx512
#define FASTNN_VEC_BYTES 64
