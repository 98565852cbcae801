// Entry point of the CPU multi-tensor optimizer step: one table per instruction set, torch-free.
#pragma once
#include <cstdint>
#include "../common/storage.h"
#include "optim_functors.h"

namespace fastnn {

// One parameter tensor's part of a step (shared by the CPU and CUDA launchers). Every pointer
// addresses `numel` elements laid out alike (the wrapper guarantees it); state pointers an
// optimizer does not use are null. The CPU kernels read the constants k (computed on the host);
// the CUDA kernels compute them on the device from h, b and the step (host value, or a device
// pointer when the step count lives on the GPU: capturable).
struct OptSlot {
  void* param;
  const void* grad;
  void* state[3];
  int64_t numel;
  int flags;           // OptFlag bits
  float step_host;     // step count after this step's increment
  const float* step_dev;
  double k[8];         // see make_consts in optim_functors.h
  double h[5];         // the group's hyper-parameters (GroupHP)
  bool b[4];
  uint64_t sr_key;     // stochastic rounding: sr_tensor_key(seed, step, parameter index)
  float* qscale[3];    // 8-bit state: state[s] holds uint8 codes and qscale[s] one scale per block
};

struct OptimCpuKernels {
  // grad_scale: null, or GradScaler's scale (gradients are divided by it in the same pass).
  // sdtype: the state tensors' storage (dtype, or compact: bf16 for float32 parameters, float32 for
  // bf16 ones); sr: bf16 stores rounded stochastically (OptSlot::sr_key).
  void (*step)(OptKind kind, DType dtype, DType sdtype, bool sr, const OptSlot* slots, int64_t nslots,
               const float* grad_scale);
  // Block-wise 8-bit state (optim_functors.h) of float32 or bf16 parameters; sr: bf16 parameters
  // and the codes rounded stochastically.
  void (*step_q8)(OptKind kind, DType dtype, bool sr, const OptSlot* slots, int64_t nslots,
                  const float* grad_scale);
};

const OptimCpuKernels& optim_kernels_avx512_bf16();
const OptimCpuKernels& optim_kernels_avx512();
const OptimCpuKernels& optim_kernels_avx2();
const OptimCpuKernels& optim_kernels_base();

}  // namespace fastnn
