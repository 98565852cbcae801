// The compile settings of the base kernel tables, first in each of its translation units
// (base.cpp and base_optim_*.cpp).
// System headers first: the target pragma below must only widen our own (namespaced) code.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>

#include "../common/cpu_fp_env.h"  // before any target pragma: not ISA code

// Baseline x86-64 (SSE2) or whatever the compiler targets by default: runs everywhere.
#define FASTNN_ISA_NS base
#define FASTNN_VEC_BYTES 16
