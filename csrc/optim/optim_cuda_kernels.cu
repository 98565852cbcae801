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

template <class T>
__global__ void __launch_bounds__(kThreads) optimizer_kernel(Launch L, int kind, const float* grad_scale,
                                                             const float* found_inf) {
  if (found_inf && *found_inf != 0.f) return;
  using C = acc_t<T>;
  const OptSlot& s = L.t[L.tensor_of[blockIdx.x]];
  const int64_t start = int64_t(L.chunk_of[blockIdx.x]) * kChunk;
  const int64_t end = start + kChunk < s.numel ? start + kChunk : s.numel;
  __shared__ double k[8];
  if (threadIdx.x == 0) make_consts(OptKind(kind), s.h, s.b, s.step_dev ? double(*s.step_dev) : double(s.step_host), k);
  __syncthreads();
  const C scale = grad_scale ? C(*grad_scale) : C(1);
  const int F = s.flags;
  T* p = static_cast<T*>(s.param);
  const T* g = static_cast<const T*>(s.grad);
  T* s0 = static_cast<T*>(s.state[0]);
  T* s1 = static_cast<T*>(s.state[1]);
  T* s2 = static_cast<T*>(s.state[2]);
  switch (OptKind(kind)) {
    case OptKind::Adam: {
      const AdamConsts<C> c = adam_consts<C>(k);
      for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) {
        C pp = ld(p[i]), m = ld(s0[i]), v = ld(s1[i]), vm = (F & kAmsgrad) ? ld(s2[i]) : C(0);
        C gg = grad_scale ? ld(g[i]) / scale : ld(g[i]);
        adam(F, c, pp, gg, m, v, vm);
        p[i] = st<T>(pp); s0[i] = st<T>(m); s1[i] = st<T>(v);
        if (F & kAmsgrad) s2[i] = st<T>(vm);
      }
      break;
    }
    case OptKind::RMSprop: {
      const RmspropConsts<C> c = rmsprop_consts<C>(k);
      for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) {
        C pp = ld(p[i]), sq = ld(s0[i]);
        C ga = (F & kCentered) ? ld(s1[i]) : C(0), mb = (F & kMomentum) ? ld(s2[i]) : C(0);
        C gg = grad_scale ? ld(g[i]) / scale : ld(g[i]);
        rmsprop(F, c, pp, gg, sq, ga, mb);
        p[i] = st<T>(pp); s0[i] = st<T>(sq);
        if (F & kCentered) s1[i] = st<T>(ga);
        if (F & kMomentum) s2[i] = st<T>(mb);
      }
      break;
    }
    case OptKind::SGD: {
      const SgdConsts<C> c = sgd_consts<C>(k);
      for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) {
        C pp = ld(p[i]), mb = ((F & kMomentum) && !(F & kFirstStep)) ? ld(s0[i]) : C(0);
        C gg = grad_scale ? ld(g[i]) / scale : ld(g[i]);
        sgd(F, c, pp, gg, mb);
        p[i] = st<T>(pp);
        if (F & kMomentum) s0[i] = st<T>(mb);
      }
      break;
    }
    case OptKind::Adagrad: {
      const AdagradConsts<C> c = adagrad_consts<C>(k);
      for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) {
        C pp = ld(p[i]), sm = ld(s0[i]);
        C gg = grad_scale ? ld(g[i]) / scale : ld(g[i]);
        adagrad(F, c, pp, gg, sm);
        p[i] = st<T>(pp); s0[i] = st<T>(sm);
      }
      break;
    }
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
