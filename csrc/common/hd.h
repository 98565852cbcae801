// Portability macros shared by host C++ and CUDA code.
#pragma once

#define FASTNN_PRAGMA(x) _Pragma(#x)
#if defined(__CUDACC__)
#define FASTNN_HD __host__ __device__
#define FASTNN_INLINE __forceinline__
#define FASTNN_UNROLL _Pragma("unroll")
// Loops of host-only code: nvcc's front end, which parses it too, warns on GCC's pragma.
#define FASTNN_HOST_UNROLL(n)
#else
#define FASTNN_UNROLL _Pragma("GCC unroll 8")
#define FASTNN_HOST_UNROLL(n) FASTNN_PRAGMA(GCC unroll n)
#define FASTNN_HD
#define FASTNN_INLINE inline __attribute__((always_inline))
#endif

// Every header of ours lives in an inline namespace named after the instruction set its translation
// unit targets, so the AVX-512, AVX2 and baseline copies of an inline function never share a symbol
// (otherwise the linker could hand an AVX-512 body to a CPU without AVX-512).
#ifndef FASTNN_ISA_NS
#if defined(__CUDACC__)
#define FASTNN_ISA_NS cuda
#else
#define FASTNN_ISA_NS base
#endif
#endif
