// OptimizerPlan: the tensors of a fastnn.optim optimizer, gathered once (Python rebuilds it when
// params or state change) so that a step crosses into C++ with a handful of scalars instead of
// five lists of tensors (torch's per-tensor boxing costs ~1 us per parameter from Python).
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <tuple>
#include <vector>

namespace fastnn {

struct OptSlot;

// Set by optim_cuda.cpp in CUDA builds: runs one dtype's slots on the current CUDA stream.
// sdtype: the state's storage code (dtype, or compact: optim_cuda.h); sr: stochastic rounding.
using CudaOptimizerExec = void (*)(int /*OptKind*/ kind, int dtype, int sdtype, bool sr,
                                   const std::vector<OptSlot>& slots, const c10::optional<at::Tensor>& grad_scale,
                                   const c10::optional<at::Tensor>& found_inf);

// Stochastic rounding of bf16 parameters with bf16 state on CUDA (its kernel instance was missing
// until the H200 run of 2026-12-04 found it) is refused unless FASTNN_CUDA_COMPACT_STATE=1 until a
// GPU run verifies it; the other compact-state kernels passed there.
bool cuda_compact_state_enabled();
extern CudaOptimizerExec g_cuda_optimizer_exec;

struct GroupHP {
  double h[5] = {0, 0, 0, 0, 0};
  bool b[4] = {false, false, false, false};
  // Stochastic rounding of bf16 stores, keyed by (sr_seed, sr_step, parameter index, element).
  bool sr = false;
  uint64_t sr_seed = 0, sr_step = 0;
};

class OptimizerPlan {
 public:
  // kind: adam, rmsprop, sgd, adagrad. states: up to 3 lists (undefined tensors where a parameter
  // has no such state yet), then up to 3 lists of the block scales of 8-bit states (uint8 codes);
  // steps empty for SGD; first: SGD momentum buffers that are new.
  OptimizerPlan(const std::string& kind, std::vector<at::Tensor> params, std::vector<int64_t> group,
                const std::vector<std::vector<c10::optional<at::Tensor>>>& states,
                const std::vector<c10::optional<at::Tensor>>& steps, std::vector<bool> first);

  // One step with per-group hyper-parameters (see optim.cpp for their order). Reads each parameter's
  // .grad; parameters without one are skipped. Returns the indices of parameters that have a
  // gradient but lack state (nothing was done: create it and rebuild the plan).
  // sr: per group, empty (round to nearest) or {seed, step} (bf16 stores rounded stochastically).
  std::vector<int64_t> step(const std::vector<std::vector<double>>& h, const std::vector<std::vector<bool>>& b,
                            const c10::optional<at::Tensor>& grad_scale, const c10::optional<at::Tensor>& found_inf,
                            const std::vector<std::vector<int64_t>>& sr = {});

  // SGD: indices whose momentum buffer has not been through a step yet.
  std::vector<int64_t> fresh() const;

 private:
  int kind_;
  std::vector<at::Tensor> params_;
  std::vector<int64_t> group_;
  std::vector<at::Tensor> states_[3];
  std::vector<at::Tensor> scales_[3];  // block scales of 8-bit states (undefined elsewhere)
  std::vector<at::Tensor> steps_;
  std::vector<bool> first_;
};

// Block-wise 8-bit state (optim_functors.h): float values -> (uint8 codes shaped like them, float32
// scale per block), and back to float32; signed for first moments, unsigned for second moments.
std::tuple<at::Tensor, at::Tensor> q8_quantize(const at::Tensor& values, bool is_signed);
at::Tensor q8_dequantize(const at::Tensor& codes, const at::Tensor& scales, bool is_signed);

}  // namespace fastnn
