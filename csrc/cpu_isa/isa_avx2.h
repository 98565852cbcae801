// The compile settings of the avx2 kernel tables, first in each of its translation units
// (avx2.cpp and avx2_optim_*.cpp).
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

#pragma GCC target("avx2,fma,f16c,bmi2")
#define FASTNN_ISA_NS avx2
#define FASTNN_VEC_BYTES 32
