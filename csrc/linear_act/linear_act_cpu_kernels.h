// CPU kernels of fused Linear+activation, written once and compiled once per instruction set
// (see csrc/cpu_isa/). Plain loops over contiguous rows that the compiler vectorizes; the math is
// the shared activation table. Threads: OpenMP (the same runtime torch's CPU build uses).
#pragma once
#include <cstdint>

#include "../common/activations.h"
#include "../common/storage.h"
#include "linear_act_cpu.h"

namespace fastnn {
inline namespace FASTNN_ISA_NS {
namespace linear_act_cpu {

// Below this many elements a pass runs on one thread: a fork/join costs more than it saves.
constexpr int64_t kParallelMinElems = 1 << 15;

inline int64_t rows_per_chunk(int64_t M, int64_t N) {
  // Fixed by the shape alone (never by the thread count), so reductions over chunks are
  // deterministic; at most 64 chunks, each at least ~16K elements.
  int64_t by_size = imax(1, (int64_t(1) << 14) / imax(N, 1));
  return imax(by_size, (M + 63) / 64);
}

template <class T, Act A>
void forward_epilogue(const T* src, const T* __restrict bias, T* y, int64_t M, int64_t N, double slope_d) {
  using C = compute_t<T>;
  const C slope = (C)slope_d;
  // src and y may be the same buffer (in place): no __restrict on them.
#pragma omp parallel for schedule(static) if (M * N >= kParallelMinElems)
  for (int64_t i = 0; i < M; ++i) {
    const T* sr = src + i * N;
    T* yr = y + i * N;
    if (bias) {
      for (int64_t j = 0; j < N; ++j) yr[j] = store_as<T>(ActFn<A>::value(load(sr[j]) + load(bias[j]), slope));
    } else {
      for (int64_t j = 0; j < N; ++j) yr[j] = store_as<T>(ActFn<A>::value(load(sr[j]), slope));
    }
  }
}

template <class T, Act A>
void forward_direct(const T* __restrict x, const T* __restrict wt, const T* __restrict bias, T* __restrict y,
                    T* __restrict z, int64_t M, int64_t N, int64_t K, double slope_d) {
  using C = compute_t<T>;
  const C slope = (C)slope_d;
#pragma omp parallel if (M * N * (K + 4) >= 4 * kParallelMinElems)
  {
    Scratch<C> acc_buf(N);
    C* __restrict acc = acc_buf.data();
#pragma omp for schedule(static)
    for (int64_t i = 0; i < M; ++i) {
      const T* __restrict xr = x + i * K;
      for (int64_t j = 0; j < N; ++j) acc[j] = bias ? load(bias[j]) : C(0);
      for (int64_t k = 0; k < K; ++k) {
        const C xv = load(xr[k]);
        const T* __restrict wr = wt + k * N;
        for (int64_t j = 0; j < N; ++j) acc[j] += xv * load(wr[j]);
      }
      T* __restrict yr = y + i * N;
      if (z) {
        T* __restrict zr = z + i * N;
        for (int64_t j = 0; j < N; ++j) zr[j] = store_as<T>(acc[j]);
      }
      for (int64_t j = 0; j < N; ++j) yr[j] = store_as<T>(ActFn<A>::value(acc[j], slope));
    }
  }
}

template <class T, Act A>
void backward_act_bias(const T* __restrict g, int64_t ldg, const T* __restrict saved, T* __restrict gz,
                       T* __restrict gb, int64_t M, int64_t N, double slope_d) {
  using C = compute_t<T>;
  const C slope = (C)slope_d;
  const int64_t rpc = rows_per_chunk(M, N);
  const int64_t nchunks = (M + rpc - 1) / rpc;
  Scratch<C> partial(gb ? nchunks * N : 0);
#pragma omp parallel for schedule(static) if (M * N >= kParallelMinElems)
  for (int64_t c = 0; c < nchunks; ++c) {
    C* __restrict part = gb ? partial.data() + c * N : nullptr;
    for (int64_t i = c * rpc; i < imin(M, (c + 1) * rpc); ++i) {
      const T* __restrict gr = g + i * ldg;
      const T* __restrict sr = saved + i * N;
      if (!gz) {  // identity: gz is g, only the bias sums
        if (part)
          for (int64_t j = 0; j < N; ++j) part[j] += load(gr[j]);
        continue;
      }
      T* __restrict out = gz + i * N;
      if (part) {
        for (int64_t j = 0; j < N; ++j) {
          C v = load(gr[j]) * ActFn<A>::grad(load(sr[j]), slope);
          out[j] = store_as<T>(v);
          part[j] += v;
        }
      } else {
        for (int64_t j = 0; j < N; ++j) out[j] = store_as<T>(load(gr[j]) * ActFn<A>::grad(load(sr[j]), slope));
      }
    }
  }
  if (gb) {
    for (int64_t c = 1; c < nchunks; ++c)
      for (int64_t j = 0; j < N; ++j) partial[j] += partial[c * N + j];
    for (int64_t j = 0; j < N; ++j) gb[j] = store_as<T>(nchunks ? partial[j] : C(0));
  }
}

// Dot product with independent partial sums so that it vectorizes without reassociation flags.
template <class C>
FASTNN_INLINE C dot(const C* __restrict a, const C* __restrict b, int64_t n) {
  constexpr int L = 16;
  C s[L] = {};
  int64_t j = 0;
  for (; j + L <= n; j += L)
    for (int l = 0; l < L; ++l) s[l] += a[j + l] * b[j + l];
  C r = 0;
  for (int l = 0; l < L; ++l) r += s[l];
  for (; j < n; ++j) r += a[j] * b[j];
  return r;
}

template <class T, Act A>
void backward_direct(const T* __restrict g, int64_t ldg, const T* __restrict saved, const T* __restrict x,
                     const T* __restrict w, T* __restrict gi, T* __restrict gw, T* __restrict gb, int64_t M,
                     int64_t N, int64_t K, double slope_d) {
  using C = compute_t<T>;
  const C slope = (C)slope_d;
  const int64_t rpc = rows_per_chunk(M, N * (K + 1));
  const int64_t nchunks = (M + rpc - 1) / rpc;
  // Per chunk: [gb (N) | gw^T (K x N)], reduced in chunk order afterwards.
  const int64_t stride = N * (K + 1);
  Scratch<C> partial(nchunks * stride);
  Scratch<C> wt(K * N);  // W^T in the compute type, rows contiguous over N
  for (int64_t j = 0; j < N; ++j)
    for (int64_t k = 0; k < K; ++k) wt[k * N + j] = load(w[j * K + k]);
#pragma omp parallel if (M * N * (K + 4) >= 4 * kParallelMinElems)
  {
    Scratch<C> gz_buf(N);
    C* __restrict gzr = gz_buf.data();
#pragma omp for schedule(static)
    for (int64_t c = 0; c < nchunks; ++c) {
      C* __restrict pb = partial.data() + c * stride;
      C* __restrict pw = pb + N;
      for (int64_t i = c * rpc; i < imin(M, (c + 1) * rpc); ++i) {
        const T* __restrict gr = g + i * ldg;
        const T* __restrict sr = saved + i * N;
        for (int64_t j = 0; j < N; ++j) gzr[j] = load(gr[j]) * ActFn<A>::grad(load(sr[j]), slope);
        for (int64_t j = 0; j < N; ++j) pb[j] += gzr[j];
        for (int64_t k = 0; k < K; ++k) {
          const C xv = load(x[i * K + k]);
          C* __restrict pwk = pw + k * N;
          for (int64_t j = 0; j < N; ++j) pwk[j] += xv * gzr[j];
          if (gi) gi[i * K + k] = store_as<T>(dot(gzr, wt.data() + k * N, N));
        }
      }
    }
  }
  for (int64_t c = 1; c < nchunks; ++c)
    for (int64_t e = 0; e < stride; ++e) partial[e] += partial[c * stride + e];
  if (gb)
    for (int64_t j = 0; j < N; ++j) gb[j] = store_as<T>(nchunks ? partial[j] : C(0));
  if (gw)
    for (int64_t j = 0; j < N; ++j)
      for (int64_t k = 0; k < K; ++k) gw[j * K + k] = store_as<T>(nchunks ? partial[N + k * N + j] : C(0));
}

// ---- type-erased entry points ----
inline void forward_epilogue_entry(DType d, const void* src, const void* bias, void* y, int64_t M, int64_t N,
                                   int act, double slope) {
  dispatch_dtype(d, [&](auto t) {
    using T = decltype(t);
    dispatch_act(Act(act), [&](auto a) {
      forward_epilogue<T, decltype(a)::value>((const T*)src, (const T*)bias, (T*)y, M, N, slope);
    });
  });
}
inline void forward_direct_entry(DType d, const void* x, const void* wt, const void* bias, void* y, void* z,
                                 int64_t M, int64_t N, int64_t K, int act, double slope) {
  dispatch_dtype(d, [&](auto t) {
    using T = decltype(t);
    dispatch_act(Act(act), [&](auto a) {
      forward_direct<T, decltype(a)::value>((const T*)x, (const T*)wt, (const T*)bias, (T*)y, (T*)z, M, N, K,
                                            slope);
    });
  });
}
inline void backward_act_bias_entry(DType d, const void* g, int64_t ldg, const void* saved, void* gz, void* gb,
                                    int64_t M, int64_t N, int act, double slope) {
  dispatch_dtype(d, [&](auto t) {
    using T = decltype(t);
    dispatch_act(Act(act), [&](auto a) {
      backward_act_bias<T, decltype(a)::value>((const T*)g, ldg, (const T*)saved, (T*)gz, (T*)gb, M, N, slope);
    });
  });
}
inline void backward_direct_entry(DType d, const void* g, int64_t ldg, const void* saved, const void* x,
                                  const void* w, void* gi, void* gw, void* gb, int64_t M, int64_t N, int64_t K, int act,
                                  double slope) {
  dispatch_dtype(d, [&](auto t) {
    using T = decltype(t);
    dispatch_act(Act(act), [&](auto a) {
      backward_direct<T, decltype(a)::value>((const T*)g, ldg, (const T*)saved, (const T*)x, (const T*)w, (T*)gi,
                                             (T*)gw, (T*)gb, M, N, K, slope);
    });
  });
}

inline const LinearActCpuKernels& table() {
  static const LinearActCpuKernels t{forward_epilogue_entry, forward_direct_entry, backward_act_bias_entry,
                                     backward_direct_entry};
  return t;
}

}  // namespace linear_act_cpu
}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
