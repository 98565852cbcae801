// Loads and stores of the CUDA kernels' storage types in their compute type (torch-free).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "hd.h"

namespace fastnn {
namespace cuda_detail {

template <class T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };
template <class T> using acc_t = typename Acc<T>::type;

__host__ __device__ __forceinline__ float ld(float v) { return v; }
__host__ __device__ __forceinline__ double ld(double v) { return v; }
__host__ __device__ __forceinline__ float ld(__half v) { return __half2float(v); }
__host__ __device__ __forceinline__ float ld(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T> __host__ __device__ __forceinline__ T st(acc_t<T> v);
template <> __host__ __device__ __forceinline__ float st<float>(float v) { return v; }
template <> __host__ __device__ __forceinline__ double st<double>(double v) { return v; }
template <> __host__ __device__ __forceinline__ __half st<__half>(float v) { return __float2half_rn(v); }
template <> __host__ __device__ __forceinline__ __nv_bfloat16 st<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Stochastic rounding to bf16 as the CPU's store_bf16_stochastic (storage.h), bit for bit: the 16
// random bits added below the kept ones, then truncated; NaN stays NaN.
template <class T> __host__ __device__ __forceinline__ T st_stochastic(acc_t<T> v, uint32_t) { return st<T>(v); }
template <> __host__ __device__ __forceinline__ __nv_bfloat16 st_stochastic<__nv_bfloat16>(float v, uint32_t r16) {
#if defined(__CUDA_ARCH__)
  const uint32_t u = __float_as_uint(v);
#else
  const uint32_t u = __builtin_bit_cast(uint32_t, v);
#endif
  __nv_bfloat16_raw r;
  r.x = (unsigned short)(v != v ? 0x7fc0u : (u + r16) >> 16);
  return __nv_bfloat16(r);
}

// load/store as a type, for code shared with the CPU launchers (optim_functors.h).
struct CudaIO {
  template <class T> static __host__ __device__ __forceinline__ acc_t<T> ld(T v) { return cuda_detail::ld(v); }
  template <class T> static __host__ __device__ __forceinline__ T st(acc_t<T> v) { return cuda_detail::st<T>(v); }
  template <class T> static __host__ __device__ __forceinline__ T st_stochastic(acc_t<T> v, uint32_t r16) {
    return cuda_detail::st_stochastic<T>(v, r16);
  }
};

// 16-byte vectors of a storage type: the unit of access of every memory-bound CUDA pass.
template <class T> constexpr int vec_elems() { return 16 / int(sizeof(T)); }
template <class T> struct alignas(16) Vec { T e[vec_elems<T>()]; };
template <class T> __device__ __forceinline__ Vec<T> load_vec(const T* p) {
  Vec<T> v;
  *reinterpret_cast<uint4*>(&v) = *reinterpret_cast<const uint4*>(p);
  return v;
}
template <class T> __device__ __forceinline__ void store_vec(T* p, const Vec<T>& v) {
  *reinterpret_cast<uint4*>(p) = *reinterpret_cast<const uint4*>(&v);
}
__host__ __device__ __forceinline__ bool aligned_to(const void* p, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}
__host__ __device__ __forceinline__ bool aligned16(const void* p) { return aligned_to(p, 16); }

// Storage codes shared with the torch-side wrappers.
enum class CudaDType : int { F32 = 0, F64 = 1, F16 = 2, BF16 = 3 };

template <class F>
inline void dispatch_cuda_dtype(CudaDType d, F&& f) {
  switch (d) {
    case CudaDType::F32: f(float{}); break;
    case CudaDType::F64: f(double{}); break;
    case CudaDType::F16: f(__half{}); break;
    case CudaDType::BF16: f(__nv_bfloat16{}); break;
  }
}

}  // namespace cuda_detail
}  // namespace fastnn
