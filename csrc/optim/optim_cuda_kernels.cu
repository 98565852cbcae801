// The CUDA multi-tensor launcher: tensors and their constants packed into one kernel argument,
// chunks of kChunk elements per block, a new launch only when the tensor or block slots fill up
// (a step over 100 tensors is a handful of launches). Per-element rules: optim_functors.h.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "../common/cuda_storage.cuh"
#include "optim_cuda.h"
#include "optim_functors.h"

namespace fastnn {
namespace {

using namespace cuda_detail;
using namespace optim_rules;

constexpr int kMaxTensors = 12;
constexpr int kMaxBlocks = 320;
constexpr int64_t kChunk = 65536;
constexpr int kThreads = 512;

struct Launch {
  OptSlot t[kMaxTensors];
  unsigned char tensor_of[kMaxBlocks];
  int chunk_of[kMaxBlocks];
};
static_assert(sizeof(Launch) <= 4096, "kernel argument too large");

template <OptKind K, class T>
__device__ __forceinline__ void update_chunk(const OptSlot& s, const double* k, int64_t start, int64_t end,
                                             const float* grad_scale) {
  using C = acc_t<T>;
  const auto c = KindConsts<K, C>::make(k);
  const int F = s.flags | (grad_scale ? kUnscale : 0);
  const C scale = grad_scale ? C(*grad_scale) : C(1);
  T* p = static_cast<T*>(s.param);
  const T* g = static_cast<const T*>(s.grad);
  T* s0 = static_cast<T*>(s.state[0]);
  T* s1 = static_cast<T*>(s.state[1]);
  T* s2 = static_cast<T*>(s.state[2]);
  for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x)
    update_element<K, CudaIO>(F, c, p, g, s0, s1, s2, i, scale);
}

template <class T>
__global__ void __launch_bounds__(kThreads) optimizer_kernel(Launch L, int kind, const float* grad_scale,
                                                             const float* found_inf) {
  if (found_inf && *found_inf != 0.f) return;
  const OptSlot& s = L.t[L.tensor_of[blockIdx.x]];
  const int64_t start = int64_t(L.chunk_of[blockIdx.x]) * kChunk;
  const int64_t end = start + kChunk < s.numel ? start + kChunk : s.numel;
  __shared__ double k[8];
  if (threadIdx.x == 0) make_consts(OptKind(kind), s.h, s.b, s.step_dev ? double(*s.step_dev) : double(s.step_host), k);
  __syncthreads();
  switch (OptKind(kind)) {
    case OptKind::Adam: update_chunk<OptKind::Adam, T>(s, k, start, end, grad_scale); break;
    case OptKind::RMSprop: update_chunk<OptKind::RMSprop, T>(s, k, start, end, grad_scale); break;
    case OptKind::SGD: update_chunk<OptKind::SGD, T>(s, k, start, end, grad_scale); break;
    case OptKind::Adagrad: update_chunk<OptKind::Adagrad, T>(s, k, start, end, grad_scale); break;
  }
}

}  // namespace

void cuda_optimizer_step(OptKind kind, int dtype, const OptSlot* slots, int64_t n, const float* grad_scale,
                         const float* found_inf, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  dispatch_cuda_dtype(CudaDType(dtype), [&](auto tag) {
    using T = decltype(tag);
    Launch L;
    std::memset(&L, 0, sizeof(L));
    int nt = 0, nb = 0;
    auto flush = [&]() {
      if (nb > 0) optimizer_kernel<T><<<nb, kThreads, 0, s>>>(L, int(kind), grad_scale, found_inf);
      nt = 0;
      nb = 0;
    };
    for (int64_t i = 0; i < n; ++i) {
      const int64_t chunks = (slots[i].numel + kChunk - 1) / kChunk;
      if (chunks == 0) continue;
      for (int64_t c = 0; c < chunks; ++c) {
        if (c == 0 || nt == 0) {  // (re)register the tensor in this launch
          if (nt == kMaxTensors) flush();
          L.t[nt++] = slots[i];
        }
        L.tensor_of[nb] = static_cast<unsigned char>(nt - 1);
        L.chunk_of[nb] = int(c);
        if (++nb == kMaxBlocks) flush();
      }
    }
    flush();
  });
}

}  // namespace fastnn
