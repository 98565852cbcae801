// Argument checks of fastnn::mlp, shared by its backends and its autograd kernel.
#pragma once
#include <ATen/ATen.h>

#include "../linear_act/linear_act_common.h"

namespace fastnn {

constexpr const char* kMlpOp = "fastnn.mlp";

// CPU chains whose every width is at most this run tile by tile through the whole chain
// (mlp_cpu_kernels.h); wider ones layer by layer through BLAS (benchmarks/bench_mlp.py measured
// both: the tiled kernels lose to MKL at 784 and 1024 wide).
constexpr int64_t kMlpTiledMaxWidth = 256;

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

}  // namespace fastnn
