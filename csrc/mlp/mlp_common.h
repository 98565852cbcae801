// Argument checks of fastnn::mlp, shared by its backends and its autograd kernel.
#pragma once
#include <ATen/ATen.h>

#include "../common/path_choice.h"
#include "../linear_act/linear_act_common.h"

namespace fastnn {

constexpr const char* kMlpOp = "fastnn.mlp";

// CPU chains run tile by tile through the whole chain (mlp_cpu_kernels.h, "tiled") or layer by
// layer through linear_act's kernels ("layers"), whichever measured faster on this machine for the
// chain's shape class (csrc/common/path_choice.h). The fixed rule (deterministic mode, empty batches):
// tiled when every width is at most kMlpTiledMaxWidth.
constexpr int64_t kMlpTiledMaxWidth = 256;
// Beyond these the tiled kernels are not even measured: each tile would re-read weights that no
// longer stay in cache, and the scratch tiles grow with the widest layer.
constexpr int64_t kMlpTiledCandidateMaxWidth = 1024;
constexpr int64_t kMlpTiledCandidateMaxWeightBytes = int64_t(4) << 20;

struct MlpLayer {
  Act act;
  double slope;
  bool has_bias;
  bool saves_output;  // backward takes the derivative from the layer's output (else from z)
};

inline bool defined_at(const c10::List<c10::optional<at::Tensor>>& biases, size_t l) {
  const c10::optional<at::Tensor> b = biases.get(l);
  return b.has_value() && b->defined();
}

// Every layer is checked as linear_act checks it, the message naming the op and the layer.
inline std::vector<MlpLayer> check_mlp_args(const at::Tensor& input, at::TensorList weights,
                                            const c10::List<c10::optional<at::Tensor>>& biases,
                                            const std::vector<std::string>& activations, c10::ArrayRef<double> slopes) {
  const size_t L = weights.size();
  TORCH_CHECK_VALUE(L >= 1, kMlpOp, ": needs at least one layer (weights is empty)");
  TORCH_CHECK_VALUE(biases.size() == L && activations.size() == L && slopes.size() == L, kMlpOp,
                    ": weights, biases, activations and negative_slopes must have one entry per layer, got ", L,
                    ", ", biases.size(), ", ", activations.size(), " and ", slopes.size());
  std::vector<MlpLayer> layers(L);
  check_linear_act_input(input, OpName{kMlpOp, 0});
  for (size_t l = 0; l < L; ++l) {
    const OpName where{kMlpOp, int64_t(l)};
    const at::Tensor& w = weights[l];
    TORCH_CHECK(w.defined(), where, ": weight is not a tensor");
    TORCH_CHECK(w.dim() == 2, where, ": weight must be 2-D (out_features, in_features), got ", w.dim(),
                "-D of shape ", w.sizes());
    if (l > 0)
      TORCH_CHECK(w.size(1) == weights[l - 1].size(0), where, ": weight expects in_features=", w.size(1),
                  " but layer ", l - 1, " has out_features=", weights[l - 1].size(0));
    check_layer_params(w, biases.get(l), l == 0 ? input.size(-1) : w.size(1), input.scalar_type(), input.device(),
                       where);
    layers[l].act = parse_activation(where, activations[l]);
    layers[l].slope = slopes[l];
    layers[l].has_bias = defined_at(biases, l);
    layers[l].saves_output = act_saves_output(layers[l].act, slopes[l]);
  }
  return layers;
}

using Biases = c10::List<c10::optional<at::Tensor>>;
// grad_input (empty unless asked for), grad_weights[l], grad_biases[l] (empty where no bias).
using Grads = std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>>;

// The layer-by-layer chain (mlp.cpp), every backend's fallback: each layer through the backend's
// linear_act kernels. The saved arena holds, layer after layer, the [M, N_l] block layer l's
// backward reads (its output or pre-activation); none for the last layer when it reads its output.
int64_t arena_size(const std::vector<MlpLayer>& layers, at::TensorList weights, int64_t M);
// Per layer, the address of its saved block (for kernels that take raw pointers); a non-contiguous
// output is copied into keep.
std::vector<void*> arena_pointers(const at::Tensor& arena, const at::Tensor& output,
                                  const std::vector<MlpLayer>& layers, const at::Tensor& input,
                                  at::TensorList weights, at::Tensor& keep);
std::vector<at::Tensor> arena_views(const at::Tensor& arena, const at::Tensor& output,
                                    const std::vector<MlpLayer>& layers, const at::Tensor& input,
                                    at::TensorList weights);
std::tuple<at::Tensor, at::Tensor> forward_layers(const std::vector<MlpLayer>& layers, const at::Tensor& input,
                                                  at::TensorList weights, const Biases& biases,
                                                  const std::vector<std::string>& activations,
                                                  at::ArrayRef<double> slopes);
Grads backward_layers(const std::vector<MlpLayer>& layers, const at::Tensor& grad_output, const at::Tensor& input,
                      at::TensorList weights, const at::Tensor& arena, const at::Tensor& output,
                      const std::vector<std::string>& activations, at::ArrayRef<double> slopes, bool input_grad);
// fastnn::activation through the dispatcher (the output a z-saving layer's backward recomputes).
at::Tensor mlp_activation(const at::Tensor& z, c10::string_view activation, double slope);

// fastnn::mlp, typed (the autograd and autocast kernels redispatch to it), and its eager Python entry
// (fastnn.mlp, FusedSequential): as linear_act_eager, the op without the boxed call.
using MlpSignature = at::Tensor(const at::Tensor&, at::TensorList, const Biases&, const std::vector<std::string>&,
                                at::ArrayRef<double>);
const c10::TypedOperatorHandle<MlpSignature>& mlp_op();
at::Tensor mlp_eager(const at::Tensor& input, const std::vector<at::Tensor>& weights,
                     const std::vector<c10::optional<at::Tensor>>& biases, const std::vector<std::string>& activations,
                     const std::vector<double>& slopes);

// Which path a chain takes on its device, and why: ("tiled" | "fused" | "layers", reason). This may
// measure (once per shape class); biases/activations/slopes default to none/identity. training: a call
// recorded for backward (else one with nothing recorded, which the CPU chooses for separately).
std::tuple<std::string, std::string> mlp_path(const at::Tensor& input, at::TensorList weights, const Biases& biases,
                                              const std::vector<std::string>& activations,
                                              at::ArrayRef<double> slopes, bool training = true);
// A chain's shape class for its path choice: input width, then each layer's width, activation, saved
// block (z or output) and bias.
std::string mlp_shape_class(at::TensorList weights, const std::vector<MlpLayer>& layers);
// Calibration data of a chain's path choice: input and output gradient of `rows` rows from the fixed-seed
// generator (made on the CPU, moved to the input's device), and the layers' activations and slopes as
// the per-layer path takes them.
struct MlpCalibration {
  at::Tensor x, g;
  std::vector<std::string> names;
  std::vector<double> slopes;
};
MlpCalibration mlp_calibration(const at::Tensor& input, at::TensorList weights, const std::vector<MlpLayer>& layers,
                               int64_t rows);
// CUDA builds (mlp_cuda.cpp): the fully fused kernels, for fastnn.mlp and for linear_act's one-layer case
// (linear_act_cuda.cpp).
// A CUDA op's choice between the fused kernels (path 0, "fused") and its other path (path 1, `other`):
// - the force switch (FASTNN_MLP_FUSED, FASTNN_LINEAR_ACT_FUSED): unset, "" or "auto": -1 (measured);
//   "0": the other path; "1" / "2": that version of the fused kernels where the layers fit them (why gets
//   the reason). Anything else is a ValueError naming op.
// - the query that measures it on input's device (the caller adds `run`): keyed by `shape` and the
//   version of the fused kernels measured; the fixed rule the other path.
int forced_fused_version(const char* env_name, const char* op, const char* other, std::string* why);
PathQuery fused_path_query(const char* op, const char* other, const char* other_reason, const at::Tensor& input,
                           const std::string& shape);
// Why the chain does not fit the fused kernels ("" when it does).
std::string mlp_fused_fit_reason(const at::Tensor& input, at::TensorList weights);
// Both directions as mlp_forward / mlp_backward return them (training: keep the saved blocks).
std::tuple<at::Tensor, at::Tensor> mlp_fused_forward(int version, const std::vector<MlpLayer>& layers,
                                                     const at::Tensor& input, at::TensorList weights,
                                                     const Biases& biases, bool training);
Grads mlp_fused_backward(int version, const std::vector<MlpLayer>& layers, const at::Tensor& grad_output,
                         const at::Tensor& input, at::TensorList weights, const Biases& biases,
                         const at::Tensor& arena, const at::Tensor& output, const std::vector<std::string>& activations,
                         at::ArrayRef<double> slopes, bool input_grad);
// Set by mlp_cuda.cpp in CUDA builds: the path a CUDA chain (checked layers) takes, and why.
using MlpCudaPath = std::tuple<std::string, std::string> (*)(const at::Tensor& input, at::TensorList weights,
                                                             const Biases& biases,
                                                             const std::vector<MlpLayer>& layers);
extern MlpCudaPath g_mlp_cuda_path;

}  // namespace fastnn
