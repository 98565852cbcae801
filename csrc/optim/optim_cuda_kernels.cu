// The CUDA multi-tensor launcher: up to kMaxTensors tensors per launch, packed into one kernel
// argument (CUDA >= 12.1 allows 32 KB of them), cut into chunks of kThreads * kUnroll 16-byte
// vectors. A persistent grid (as many blocks as fit on the GPU at once) walks the chunks in order,
// so small and large steps alike fill the machine, and a 100-tensor step is one launch.
// Per-element rules: optim_functors.h (shared with the CPU launcher).
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "../common/cuda_storage.cuh"
#include "optim_cuda.h"
#include "optim_functors.h"

namespace fastnn {
namespace {

using namespace cuda_detail;
using namespace optim_rules;

constexpr int kMaxTensors = 128;
constexpr int kThreads = 256;
constexpr int kUnroll = 2;  // 16-byte vectors per thread and stream in flight

// One tensor of a launch. Vectorised tensors run [0, head) and the tail element by element and the
// rest in 16-byte vectors; `scalar` ones (pointers misaligned differently) element by element.
struct KSlot {
  void* p;
  const void* g;
  void* s[3];
  int64_t numel;
  const float* step_dev;  // capturable: constants come from this step count
  int64_t chunk0;         // index of this tensor's first chunk in the launch
  double k[8];            // host-computed constants (step_dev == nullptr)
  double h[5];
  int flags;
  int head;
  bool scalar;
  bool b[4];
  float* qs[3];     // 8-bit state: block scales
  uint64_t sr_key;  // stochastic rounding: sr_tensor_key(seed, step, parameter index)
};

struct Launch {
  KSlot t[kMaxTensors];
  int n;
  int64_t chunks;  // total
};
static_assert(sizeof(Launch) <= 32000, "kernel argument too large");

template <class T> constexpr int64_t chunk_elems() { return int64_t(kThreads) * kUnroll * vec_elems<T>(); }

// A block's walk over a launch's chunks (in order): the tensor of each chunk, and that tensor's
// constants, computed once per tensor the block visits.
template <OptKind K, class C> struct SlotWalk {
  const Launch& L;
  int t = 0, have = -1;
  decltype(KindConsts<K, C>::make(nullptr)) c;
  __device__ explicit SlotWalk(const Launch& l) : L(l) {}
  __device__ const KSlot& at(int64_t chunk) {
    while (t + 1 < L.n && L.t[t + 1].chunk0 <= chunk) ++t;
    const KSlot& s = L.t[t];
    if (have != t) {
      double k[8];
      if (s.step_dev) make_consts(K, s.h, s.b, double(*s.step_dev), k);
      else for (int j = 0; j < 8; ++j) k[j] = s.k[j];
      c = KindConsts<K, C>::make(k);
      have = t;
    }
    return s;
  }
};

// The kernel: every block takes chunks blockIdx.x, blockIdx.x + gridDim.x, ... in order.
// Registers are not capped: capping them for 3 resident blocks per SM (FASTNN_OPT_MINB experiment,
// benchmarks/GPU_NOTES.md) spilled and was no faster.
template <OptKind K, class T>
__global__ void __launch_bounds__(kThreads) optimizer_kernel(const __grid_constant__ Launch L,
                                                             const float* grad_scale, const float* found_inf) {
  using C = acc_t<T>;
  constexpr int V = vec_elems<T>();
  constexpr int64_t CE = chunk_elems<T>();
  if (found_inf && *found_inf != 0.f) return;
  const C scale = grad_scale ? C(*grad_scale) : C(1);
  SlotWalk<K, C> walk(L);
  const auto& c = walk.c;
  for (int64_t chunk = blockIdx.x; chunk < L.chunks; chunk += gridDim.x) {
    const KSlot& s = walk.at(chunk);
    const int F = s.flags | (grad_scale ? kUnscale : 0);
    T* p = static_cast<T*>(s.p);
    const T* g = static_cast<const T*>(s.g);
    T* s0 = static_cast<T*>(s.s[0]);
    T* s1 = static_cast<T*>(s.s[1]);
    T* s2 = static_cast<T*>(s.s[2]);
    const int64_t local = chunk - s.chunk0;
    if (s.scalar) {
      const int64_t begin = local * CE, end = begin + CE < s.numel ? begin + CE : s.numel;
      for (int64_t i = begin + threadIdx.x; i < end; i += kThreads)
        update_element<K, CudaIO>(F, c, p, g, s0, s1, s2, i, scale);
      continue;
    }
    if (local == 0 && threadIdx.x < s.head && threadIdx.x < s.numel)
      update_element<K, CudaIO>(F, c, p, g, s0, s1, s2, int64_t(threadIdx.x), scale);
    // Load every vector of this thread's share first (kUnroll x streams 16-byte loads in flight),
    // then compute and store.
    const int64_t base = s.head + local * CE;
    int64_t idx[kUnroll];
    bool full[kUnroll];
    Vec<T> vp[kUnroll], vg[kUnroll], vs[3][kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      idx[u] = base + (int64_t(u) * kThreads + threadIdx.x) * V;
      full[u] = idx[u] + V <= s.numel;
      if (full[u]) {
        vp[u] = load_vec(p + idx[u]);
        vg[u] = load_vec(g + idx[u]);
#pragma unroll
        for (int j = 0; j < 3; ++j)
          if (reads_state<K>(F, j)) vs[j][u] = load_vec(static_cast<const T*>(s.s[j]) + idx[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (full[u]) {
#pragma unroll
        for (int e = 0; e < V; ++e) {
          C pp = ld(vp[u].e[e]);
          C gg = (F & kUnscale) ? ld(vg[u].e[e]) / scale : ld(vg[u].e[e]);
          C v[3];
#pragma unroll
          for (int j = 0; j < 3; ++j) v[j] = reads_state<K>(F, j) ? ld(vs[j][u].e[e]) : C(0);
          apply_rule<K>(F, c, pp, gg, v[0], v[1], v[2]);
          vp[u].e[e] = st<T>(pp);
#pragma unroll
          for (int j = 0; j < 3; ++j) vs[j][u].e[e] = st<T>(v[j]);
        }
        store_vec(p + idx[u], vp[u]);
#pragma unroll
        for (int j = 0; j < 3; ++j)
          if (writes_state<K>(F, j)) store_vec(static_cast<T*>(s.s[j]) + idx[u], vs[j][u]);
      } else {
        for (int64_t i = idx[u]; i < idx[u] + V && i < s.numel; ++i)
          update_element<K, CudaIO>(F, c, p, g, s0, s1, s2, i, scale);
      }
    }
  }
}

// Launches kern over a persistent grid: as many blocks as are resident on the device at once
// (cache: per device, for this kernel), or fewer for a small launch.
template <class Kern>
void launch_persistent(Kern kern, int* cache, const Launch& L, const float* grad_scale, const float* found_inf,
                       cudaStream_t s) {
  if (L.chunks == 0) return;
  int dev = 0;
  cudaGetDevice(&dev);
  const bool cached = dev >= 0 && dev < 64;
  int cap = cached ? cache[dev] : 0;
  if (!cap) {
    int sms = 0, per_sm = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, kThreads, 0);
    cap = (sms > 0 ? sms : 1) * (per_sm > 0 ? per_sm : 1);
    if (cached) cache[dev] = cap;
  }
  const unsigned grid = unsigned(L.chunks < cap ? L.chunks : cap);
  kern<<<grid, kThreads, 0, s>>>(L, grad_scale, found_inf);
}

// Packs the slots into launches of up to kMaxTensors tensors and runs each: layout(o, k) fills a
// slot's layout fields and returns its number of chunks.
template <class Layout, class Run>
void pack_and_run(const OptSlot* slots, int64_t n, Layout&& layout, Run&& run) {
  static thread_local Launch L;  // ~27 KB: kept off the stack; the launch copies it
  L.n = 0;
  L.chunks = 0;
  auto flush = [&]() {
    if (L.n) run(L);
    L.n = 0;
    L.chunks = 0;
  };
  for (int64_t i = 0; i < n; ++i) {
    const OptSlot& o = slots[i];
    if (o.numel == 0) continue;
    KSlot& k = L.t[L.n];
    std::memset(&k, 0, sizeof(k));
    k.p = o.param;
    k.g = o.grad;
    for (int j = 0; j < 3; ++j) k.s[j] = o.state[j], k.qs[j] = o.qscale[j];
    k.numel = o.numel;
    k.step_dev = o.step_dev;
    std::memcpy(k.k, o.k, sizeof(k.k));
    std::memcpy(k.h, o.h, sizeof(k.h));
    std::memcpy(k.b, o.b, sizeof(k.b));
    k.flags = o.flags;
    k.sr_key = o.sr_key;
    k.chunk0 = L.chunks;
    L.chunks += layout(o, k);
    if (++L.n == kMaxTensors) flush();
  }
  flush();
}

// Elements before the first 16-byte boundary, when every pointer the update touches sits at the same
// offset from one (else -1: the tensor goes element by element).
template <class T> int common_head(const OptSlot& o) {
  const void* ptrs[5] = {o.param, o.grad, o.state[0], o.state[1], o.state[2]};
  int head = -1;
  for (const void* q : ptrs) {
    if (!q) continue;
    const auto a = reinterpret_cast<uintptr_t>(q);
    if (a % sizeof(T)) return -1;
    const int h = int(((16 - a % 16) % 16) / sizeof(T));
    if (head >= 0 && h != head) return -1;
    head = h;
  }
  return head < 0 ? 0 : head;
}


// ---- compact state (bf16 or block-wise 8-bit) and stochastic rounding ----
// The CPU launcher's per-element rule, 8-bit codec and counter-based random bits, so a CUDA step
// computes what the CPU's does (up to the multiply-adds nvcc fuses in the rule, as in float32 mode).
// Version 1: element-wise over a persistent grid (compact_vec_kernel with every tensor on its
// element-wise path); 8-bit state one thread block per block of kQ8Block values.
static_assert(kThreads == kQ8Block, "one thread per value of an 8-bit block");

// State j's block scale from its largest finite magnitude, and a value's code under it (signed
// codes for first moments).
template <OptKind K> __device__ __forceinline__ float q8_scale_of(int j, uint32_t amax_bits, float* inv) {
  return state_signed<K>(j) ? q8_block_scale<true>(amax_bits, inv) : q8_block_scale<false>(amax_bits, inv);
}
template <OptKind K>
__device__ __forceinline__ uint8_t q8_code_of(int j, float v, float scale, float inv, uint32_t add) {
  return state_signed<K>(j) ? q8_encode_value<true>(v, scale, inv, add) : q8_encode_value<false>(v, scale, inv, add);
}

// 8-bit state: thread j of a block owns value j of one 8-bit block. Decode, rule, store the
// parameter; then the block's largest finite magnitude of each new state (warp shuffles, then
// shared memory), its scale, and the codes, as the CPU's encoder computes them.
template <OptKind K, class T, bool SR>
__global__ void __launch_bounds__(kThreads) q8_kernel(const __grid_constant__ Launch L, const float* grad_scale,
                                                      const float* found_inf) {
  using C = float;
  constexpr int W = kThreads / 32;
  __shared__ uint32_t red[3][W];
  if (found_inf && *found_inf != 0.f) return;
  const C scale = grad_scale ? C(*grad_scale) : C(1);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  SlotWalk<K, C> walk(L);
  const auto& c = walk.c;
  for (int64_t chunk = blockIdx.x; chunk < L.chunks; chunk += gridDim.x) {
    const KSlot& s = walk.at(chunk);
    const int F = s.flags | (grad_scale ? kUnscale : 0);
    const int64_t blk = chunk - s.chunk0;
    const int64_t i = blk * kQ8Block + threadIdx.x;
    const bool in = i < s.numel;
    T* p = static_cast<T*>(s.p);
    const T* g = static_cast<const T*>(s.g);
    uint8_t* q[3] = {static_cast<uint8_t*>(s.s[0]), static_cast<uint8_t*>(s.s[1]), static_cast<uint8_t*>(s.s[2])};
    C v[3] = {0.f, 0.f, 0.f};
    auto st = make_store<SR>(s.sr_key);
    st.at(i);
    if (in) {
      C pp = CudaIO::ld(p[i]);
      C gg = (F & kUnscale) ? CudaIO::ld(g[i]) / scale : CudaIO::ld(g[i]);
#pragma unroll
      for (int j = 0; j < 3; ++j)
        if (reads_state<K>(F, j)) v[j] = s.qs[j][blk] * q8_decode_state<K>(j, q[j][i]);
      apply_rule<K>(F, c, pp, gg, v[0], v[1], v[2]);
      p[i] = st.template store<CudaIO, T>(pp, 0);
    }
    uint32_t am[3];
#pragma unroll
    for (int j = 0; j < 3; ++j) {
      am[j] = in && writes_state<K>(F, j) ? q8_amax_step(0u, v[j]) : 0u;
      for (int off = 16; off > 0; off /= 2) {
        const uint32_t o = __shfl_xor_sync(0xffffffffu, am[j], off);
        am[j] = o > am[j] ? o : am[j];
      }
      if (lane == 0) red[j][warp] = am[j];
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < 3; ++j) {
      uint32_t a = 0;
      for (int w = 0; w < W; ++w) a = red[j][w] > a ? red[j][w] : a;
      am[j] = a;
    }
    __syncthreads();  // red is reused by the next chunk
#pragma unroll
    for (int j = 0; j < 3; ++j) {
      if (!writes_state<K>(F, j)) continue;
      float inv;
      const float sc = q8_scale_of<K>(j, am[j], &inv);
      if (in) q[j][i] = q8_code_of<K>(j, v[j], sc, inv, st.q8_add(1 + j));
      if (threadIdx.x == 0) s.qs[j][blk] = sc;
    }
  }
}

// ---- compact state, version 2 (not yet run on a GPU; FASTNN_CUDA_COMPACT_KERNELS=2) ----
// Version 1 (element by element; q8_kernel above) measured 0.92-0.99x (bf16 state) and 0.61x (int8) torch's fused float32 step on an
// H200 at 100M parameters (benchmarks/RESULTS.md): one 2- or 4-byte access per element and thread,
// and for 8 bits two block barriers per 256 values. Version 2 keeps the rule, codec and random bits
// and changes the access: 8 consecutive elements per thread and group in 16-byte vectors, kUnroll
// groups loaded before any is computed (as the float32 kernel does); 8-bit blocks one warp each, 8
// values per lane, the block's largest magnitude by warp shuffles alone. Tensors whose pointers are
// not 16-byte aligned (8-byte for codes) take the element-wise path.
constexpr int kGroup = 8;  // elements per thread and group
constexpr int64_t kCompactVecChunk = int64_t(kThreads) * kUnroll * kGroup;
constexpr int kQ8BlocksPerChunk = kThreads / 32;  // one warp per 8-bit block
static_assert(kQ8Block == 32 * kGroup, "a warp's lanes hold a block's values, kGroup each");

// The persistent grid's walk for the version-2 kernels: body(slot, flags, constants, grad scale,
// chunk index within the slot) for chunks blockIdx.x, blockIdx.x + gridDim.x, ...; nothing when
// found_inf is set.
template <OptKind K, class C, class Body>
__device__ __forceinline__ void for_each_chunk(const Launch& L, const float* grad_scale, const float* found_inf,
                                               Body&& body) {
  if (found_inf && *found_inf != 0.f) return;
  const C scale = grad_scale ? C(*grad_scale) : C(1);
  SlotWalk<K, C> walk(L);
  for (int64_t chunk = blockIdx.x; chunk < L.chunks; chunk += gridDim.x) {
    const KSlot& s = walk.at(chunk);
    body(s, s.flags | (grad_scale ? kUnscale : 0), walk.c, scale, chunk - s.chunk0);
  }
}

// kGroup consecutive values of storage type T as 16-byte vectors.
template <class T> struct Group {
  static constexpr int V = vec_elems<T>(), N = kGroup / V;
  Vec<T> v[N];
  __device__ __forceinline__ void load(const T* p) {
#pragma unroll
    for (int n = 0; n < N; ++n) v[n] = load_vec(p + n * V);
  }
  __device__ __forceinline__ void store(T* p) const {
#pragma unroll
    for (int n = 0; n < N; ++n) store_vec(p + n * V, v[n]);
  }
  __device__ __forceinline__ T& operator[](int e) { return v[e / V].e[e % V]; }
};

// bf16 state of float32 parameters, float32 state of bf16 ones, or bf16 state of bf16 parameters
// (stochastic rounding), each rounded as the CPU does. `scalar` tensors go element by element.
template <OptKind K, class T, class S, bool SR>
__global__ void __launch_bounds__(kThreads) compact_vec_kernel(const __grid_constant__ Launch L,
                                                               const float* grad_scale, const float* found_inf) {
  using C = acc_t<T>;
  for_each_chunk<K, C>(L, grad_scale, found_inf, [&](const KSlot& s, const int F, const auto& c, const C scale,
                                                     const int64_t local) {
    T* p = static_cast<T*>(s.p);
    const T* g = static_cast<const T*>(s.g);
    S* sp[3] = {static_cast<S*>(s.s[0]), static_cast<S*>(s.s[1]), static_cast<S*>(s.s[2])};
    const int64_t begin = local * kCompactVecChunk;
    if (s.scalar) {
      const int64_t end = begin + kCompactVecChunk < s.numel ? begin + kCompactVecChunk : s.numel;
      for (int64_t i = begin + threadIdx.x; i < end; i += kThreads)
        update_element<K, CudaIO>(F, c, p, g, sp[0], sp[1], sp[2], i, scale, make_store<SR>(s.sr_key));
      return;
    }
    int64_t idx[kUnroll];
    bool full[kUnroll];
    Group<T> vp[kUnroll], vg[kUnroll];
    Group<S> vs[3][kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      idx[u] = begin + (int64_t(u) * kThreads + threadIdx.x) * kGroup;
      full[u] = idx[u] + kGroup <= s.numel;
      if (full[u]) {
        vp[u].load(p + idx[u]);
        vg[u].load(g + idx[u]);
#pragma unroll
        for (int j = 0; j < 3; ++j)
          if (reads_state<K>(F, j)) vs[j][u].load(sp[j] + idx[u]);
      }
    }
    auto st = make_store<SR>(s.sr_key);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (full[u]) {
#pragma unroll
        for (int e = 0; e < kGroup; ++e) {
          st.at(idx[u] + e);
          C pp = CudaIO::ld(vp[u][e]);
          C gg = (F & kUnscale) ? CudaIO::ld(vg[u][e]) / scale : CudaIO::ld(vg[u][e]);
          C v[3];
#pragma unroll
          for (int j = 0; j < 3; ++j) v[j] = reads_state<K>(F, j) ? C(CudaIO::ld(vs[j][u][e])) : C(0);
          apply_rule<K>(F, c, pp, gg, v[0], v[1], v[2]);
#pragma unroll
          for (int j = 0; j < 3; ++j)
            if (writes_state<K>(F, j)) vs[j][u][e] = st.template store<CudaIO, S>(v[j], 1 + j);
          vp[u][e] = st.template store<CudaIO, T>(pp, 0);
        }
        vp[u].store(p + idx[u]);
#pragma unroll
        for (int j = 0; j < 3; ++j)
          if (writes_state<K>(F, j)) vs[j][u].store(sp[j] + idx[u]);
      } else {
        for (int64_t i = idx[u]; i < idx[u] + kGroup && i < s.numel; ++i)
          update_element<K, CudaIO>(F, c, p, g, sp[0], sp[1], sp[2], i, scale, make_store<SR>(s.sr_key));
      }
    }
  });
}

// 8-bit state, one warp per block of kQ8Block values: lane l holds values 8l..8l+7 of the block.
template <OptKind K, class T, bool SR>
__global__ void __launch_bounds__(kThreads) q8_warp_kernel(const __grid_constant__ Launch L, const float* grad_scale,
                                                           const float* found_inf) {
  using C = float;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for_each_chunk<K, C>(L, grad_scale, found_inf, [&](const KSlot& s, const int F, const auto& c, const C scale,
                                                     const int64_t local) {
    const int64_t blk = local * kQ8BlocksPerChunk + warp;
    if (blk * kQ8Block >= s.numel) return;  // the tensor's last chunk: warps past its end
    T* p = static_cast<T*>(s.p);
    const T* g = static_cast<const T*>(s.g);
    uint8_t* q[3] = {static_cast<uint8_t*>(s.s[0]), static_cast<uint8_t*>(s.s[1]), static_cast<uint8_t*>(s.s[2])};
    const int64_t i0 = blk * kQ8Block + lane * kGroup;
    const bool vec = !s.scalar && i0 + kGroup <= s.numel;
    C pp[kGroup], gg[kGroup], v[3][kGroup];
    uint8_t code[3][kGroup];
    if (vec) {
      Group<T> gp, gq;
      gp.load(p + i0);
      gq.load(g + i0);
#pragma unroll
      for (int e = 0; e < kGroup; ++e) pp[e] = CudaIO::ld(gp[e]), gg[e] = CudaIO::ld(gq[e]);
#pragma unroll
      for (int j = 0; j < 3; ++j)
        if (reads_state<K>(F, j)) {
          const uint2 w = *reinterpret_cast<const uint2*>(q[j] + i0);
#pragma unroll
          for (int e = 0; e < kGroup; ++e) code[j][e] = uint8_t((e < 4 ? w.x : w.y) >> (8 * (e % 4)));
        }
    } else {
#pragma unroll
      for (int e = 0; e < kGroup; ++e) {
        const bool in = i0 + e < s.numel;
        pp[e] = in ? CudaIO::ld(p[i0 + e]) : C(0);
        gg[e] = in ? CudaIO::ld(g[i0 + e]) : C(0);
#pragma unroll
        for (int j = 0; j < 3; ++j) code[j][e] = in && reads_state<K>(F, j) ? q[j][i0 + e] : uint8_t(0);
      }
    }
    auto st = make_store<SR>(s.sr_key);
    uint32_t am[3] = {0u, 0u, 0u};
    Group<T> pout;
#pragma unroll
    for (int e = 0; e < kGroup; ++e) {
      const bool in = i0 + e < s.numel;
#pragma unroll
      for (int j = 0; j < 3; ++j) v[j][e] = reads_state<K>(F, j) ? s.qs[j][blk] * q8_decode_state<K>(j, code[j][e]) : 0.f;
      if (!in) continue;
      st.at(i0 + e);
      const C gv = (F & kUnscale) ? gg[e] / scale : gg[e];
      apply_rule<K>(F, c, pp[e], gv, v[0][e], v[1][e], v[2][e]);
      pout[e] = st.template store<CudaIO, T>(pp[e], 0);
#pragma unroll
      for (int j = 0; j < 3; ++j)
        if (writes_state<K>(F, j)) am[j] = q8_amax_step(am[j], v[j][e]);
    }
    // The block's largest finite magnitudes (every lane reads its old scale above, before lane 0
    // writes the new one below: the shuffles order them).
#pragma unroll
    for (int j = 0; j < 3; ++j)
#pragma unroll
      for (int off = 16; off > 0; off /= 2) {
        const uint32_t o = __shfl_xor_sync(0xffffffffu, am[j], off);
        am[j] = o > am[j] ? o : am[j];
      }
#pragma unroll
    for (int j = 0; j < 3; ++j) {
      if (!writes_state<K>(F, j)) continue;
      float inv;
      const float sc = q8_scale_of<K>(j, am[j], &inv);
#pragma unroll
      for (int e = 0; e < kGroup; ++e) {
        st.at(i0 + e);
        code[j][e] = q8_code_of<K>(j, v[j][e], sc, inv, st.q8_add(1 + j));
      }
      if (vec) {
        uint2 w = make_uint2(0u, 0u);
#pragma unroll
        for (int e = 0; e < kGroup; ++e) (e < 4 ? w.x : w.y) |= uint32_t(code[j][e]) << (8 * (e % 4));
        *reinterpret_cast<uint2*>(q[j] + i0) = w;
      } else {
#pragma unroll
        for (int e = 0; e < kGroup; ++e)
          if (i0 + e < s.numel) q[j][i0 + e] = code[j][e];
      }
      if (lane == 0) s.qs[j][blk] = sc;
    }
    if (vec) {
      pout.store(p + i0);
    } else {
#pragma unroll
      for (int e = 0; e < kGroup; ++e)
        if (i0 + e < s.numel) p[i0 + e] = pout[e];
    }
  });
}

// FASTNN_CUDA_COMPACT_KERNELS=2 selects version 2 (compact_vec_kernel, q8_warp_kernel) until a GPU
// run verifies and times it; version 1 is the default.
bool compact_kernels_v2() {
  const char* e = std::getenv("FASTNN_CUDA_COMPACT_KERNELS");
  return e && std::strcmp(e, "2") == 0;
}

// Whether a slot's tensors allow version 2's vector accesses: 16-byte aligned parameter, gradient and
// compact state (8-bit codes: 8-byte aligned).
bool vector_ok(const OptSlot& o, bool q8) {
  bool ok = aligned16(o.param) && aligned16(o.grad);
  for (int j = 0; j < 3; ++j) ok = ok && (!o.state[j] || aligned_to(o.state[j], q8 ? 8 : 16));
  return ok;
}

template <class T, class S, bool SR, bool Q8>
void run_compact(OptKind kind, const OptSlot* slots, int64_t n, const float* gs, const float* fi, cudaStream_t st) {
  const bool v2 = compact_kernels_v2();
  const int64_t per_chunk = Q8 ? (v2 ? kQ8Block * kQ8BlocksPerChunk : kQ8Block) : kCompactVecChunk;
  pack_and_run(
      slots, n,
      [&](const OptSlot& o, KSlot& k) {
        k.scalar = !v2 || !vector_ok(o, Q8);  // version 1: element by element
        return (o.numel + per_chunk - 1) / per_chunk;
      },
      [&](const Launch& L) {
        with_kind(kind, [&](auto k) {
          constexpr OptKind K = decltype(k)::value;
          static int cache[2][64] = {{0}};
          if constexpr (Q8) {
            if (v2) launch_persistent(q8_warp_kernel<K, T, SR>, cache[1], L, gs, fi, st);
            else launch_persistent(q8_kernel<K, T, SR>, cache[0], L, gs, fi, st);
          } else {
            launch_persistent(compact_vec_kernel<K, T, S, SR>, cache[0], L, gs, fi, st);
          }
        });
      });
}

}  // namespace

void cuda_optimizer_step(OptKind kind, int dtype, const OptSlot* slots, int64_t n, const float* grad_scale,
                         const float* found_inf, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  dispatch_cuda_dtype(CudaDType(dtype), [&](auto tag) {
    using T = decltype(tag);
    constexpr int64_t CE = chunk_elems<T>();
    pack_and_run(
        slots, n,
        [&](const OptSlot& o, KSlot& k) -> int64_t {
          const int head = common_head<T>(o);
          k.scalar = head < 0;
          k.head = k.scalar ? 0 : (int64_t(head) < o.numel ? head : int(o.numel));
          const int64_t body = o.numel - k.head;
          return body > 0 ? (body + CE - 1) / CE : 1;
        },
        [&](const Launch& L) {
          with_kind(kind, [&](auto kk) {
            constexpr OptKind K = decltype(kk)::value;
            static int cache[64] = {0};
            launch_persistent(optimizer_kernel<K, T>, cache, L, grad_scale, found_inf, s);
          });
        });
  });
}

bool cuda_optimizer_step_compact(OptKind kind, int dtype, int sdtype, bool sr, const OptSlot* slots, int64_t n,
                                 const float* grad_scale, const float* found_inf, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  using bf = __nv_bfloat16;
  // (parameter, state) codes: 0 float32, 3 bfloat16, 4 8-bit codes (optim.cpp checked the pair)
  if (dtype == 0 && sdtype == 3) {
    if (sr) run_compact<float, bf, true, false>(kind, slots, n, grad_scale, found_inf, st);
    else run_compact<float, bf, false, false>(kind, slots, n, grad_scale, found_inf, st);
  } else if (dtype == 3 && sdtype == 0) {
    if (sr) run_compact<bf, float, true, false>(kind, slots, n, grad_scale, found_inf, st);
    else run_compact<bf, float, false, false>(kind, slots, n, grad_scale, found_inf, st);
  } else if (dtype == 0 && sdtype == 4) {
    if (sr) run_compact<float, uint8_t, true, true>(kind, slots, n, grad_scale, found_inf, st);
    else run_compact<float, uint8_t, false, true>(kind, slots, n, grad_scale, found_inf, st);
  } else if (dtype == 3 && sdtype == 4) {
    if (sr) run_compact<bf, uint8_t, true, true>(kind, slots, n, grad_scale, found_inf, st);
    else run_compact<bf, uint8_t, false, true>(kind, slots, n, grad_scale, found_inf, st);
  } else if (dtype == 3 && sdtype == 3 && sr) {
    // bf16 parameters and state rounded stochastically (to nearest they take the plain kernel)
    run_compact<bf, bf, true, false>(kind, slots, n, grad_scale, found_inf, st);
  } else {
    return false;  // no kernel for this pair: the caller raises rather than skip the step
  }
  return true;
}

}  // namespace fastnn
