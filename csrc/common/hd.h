// Portability macros shared by host C++ and CUDA code.
#pragma once

#if defined(__CUDACC__)
#define FASTNN_HD __host__ __device__
#define FASTNN_INLINE __forceinline__
#define FASTNN_UNROLL _Pragma("unroll")
#else
#define FASTNN_UNROLL _Pragma("GCC unroll 8")
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
