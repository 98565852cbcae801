// What every kernel-table translation unit includes before its instruction set's target pragma
// (isa_<isa>.h): system headers and fastnn's non-ISA headers, so that pragma only widens our own
// (namespaced) code. GCC 12 reports -Wmaybe-uninitialized inside its own AVX-512 intrinsics once
// they are inlined (the _mm*_undefined idiom; GCC bug 105593, fixed in 13): silenced for these
// headers' lines only.
#pragma once
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>

#include "../common/cpu_fp_env.h"
