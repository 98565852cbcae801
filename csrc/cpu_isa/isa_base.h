// The compile settings of the base kernel tables, first in each of its translation units
// (base.cpp and base_optim_*.cpp).
#pragma once
#include "isa_prelude.h"

// Baseline x86-64 (SSE2) or whatever the compiler targets by default: runs everywhere.
#define FASTNN_ISA_NS base
#define FASTNN_VEC_BYTES 16
