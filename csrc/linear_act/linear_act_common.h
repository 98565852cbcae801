// Argument checks and shape helpers shared by the CPU and CUDA implementations of linear_act.
#pragma once
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include "../common/act_names.h"
#include "../common/storage.h"

namespace fastnn {

constexpr const char* kLinearActOp = "fastnn.linear_act";

// How an error names the op: "fastnn.linear_act", or "fastnn.mlp: layer 2". Printed only when a
// check fails, so the checks cost no string building.
struct OpName {
  const char* op;
  int64_t layer = -1;
};
inline std::ostream& operator<<(std::ostream& os, const OpName& n) {
  os << n.op;
  if (n.layer >= 0) os << ": layer " << n.layer;
  return os;
}

// A layer's weight and bias, for an input of in_features columns, dtype and device.
inline void check_layer_params(const at::Tensor& weight, const c10::optional<at::Tensor>& bias, int64_t in_features,
                               at::ScalarType dtype, at::Device device, const OpName& op) {
  TORCH_CHECK(weight.defined(), op, ": weight must be a tensor");
  TORCH_CHECK(weight.dim() == 2, op, ": weight must be 2-D (out_features, in_features), got ", weight.dim(),
              "-D of shape ", weight.sizes());
  TORCH_CHECK(in_features == weight.size(1), op, ": input has ", in_features,
              " features in its last dimension but weight expects in_features=", weight.size(1),
              " (weight shape ", weight.sizes(), ")");
  TORCH_CHECK(weight.scalar_type() == dtype, op, ": dtype mismatch: input is ", dtype, " but weight is ",
              weight.scalar_type());
  TORCH_CHECK(weight.device() == device, op, ": device mismatch: input is on ", device, " but weight is on ",
              weight.device());
  if (bias.has_value() && bias->defined()) {
    const at::Tensor& b = *bias;
    TORCH_CHECK(b.dim() == 1 && b.size(0) == weight.size(0), op, ": bias must be 1-D of size out_features=",
                weight.size(0), ", got shape ", b.sizes());
    TORCH_CHECK(b.scalar_type() == dtype, op, ": dtype mismatch: input is ", dtype, " but bias is ",
                b.scalar_type());
    TORCH_CHECK(b.device() == device, op, ": device mismatch: input is on ", device, " but bias is on ",
                b.device());
  }
}

inline void check_linear_act_input(const at::Tensor& input, const OpName& op) {
  TORCH_CHECK(input.defined(), op, ": input must be a tensor");
  TORCH_CHECK(at::isFloatingType(input.scalar_type()), op, ": input must be a floating-point tensor, got ",
              input.scalar_type());
  TORCH_CHECK(input.dim() >= 1, op, ": input must have at least 1 dimension (..., in_features)");
}

inline void check_linear_act_args(const at::Tensor& input, const at::Tensor& weight,
                                  const c10::optional<at::Tensor>& bias, const OpName& op = {kLinearActOp}) {
  check_linear_act_input(input, op);
  check_layer_params(weight, bias, input.size(-1), input.scalar_type(), input.device(), op);
}

// The CPU kernels' storage type of a tensor.
inline DType cpu_dtype(const at::Tensor& t, const char* op) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::F32;
    case at::kDouble: return DType::F64;
    case at::kBFloat16: return DType::BF16;
    default: TORCH_CHECK(false, op, ": unsupported dtype ", t.scalar_type(),
                         " on CPU (float32, float64 and bfloat16 are supported)");
  }
}

// Number of rows of (..., K) seen as a matrix (reshape(-1, K) is ambiguous when K == 0).
inline int64_t linear_rows(const at::Tensor& input) {
  int64_t m = 1;
  for (int64_t d = 0; d + 1 < input.dim(); ++d) m *= input.size(d);
  return m;
}

// (..., K) -> (..., N)
inline std::vector<int64_t> linear_out_shape(const at::Tensor& input, int64_t N) {
  std::vector<int64_t> s(input.sizes().begin(), input.sizes().end());
  s.back() = N;
  return s;
}

// What every backend's linear_act_backward starts from: checked arguments, the activation, and
// input / grad_output / saved as contiguous-where-needed matrices.
struct LinearActBackwardArgs {
  Act act;
  int64_t M, N, K;
  // x [M, K] (a view when possible); s [M, N] contiguous; g [M, N] contiguous, or with rows_apart
  // a view whose columns are contiguous and whose rows are g.stride(0) elements apart (0 included).
  at::Tensor x, g, s;
};

// grad_output as [M, N] rows of contiguous columns, copied only when it has no such form. A gradient
// broadcast down the rows (.sum()'s scalar, an expanded row) becomes one row read M times: the copy
// it replaces cost ~2-3% of a (8192, 128, 128) silu layer's step on Zen 3.
inline at::Tensor grad_rows(const at::Tensor& grad_output, int64_t M, int64_t N, bool rows_apart) {
  at::Tensor g = grad_output.reshape({M, N});
  if (!rows_apart || M * N == 0) return g.contiguous();
  if (N == 1 || g.stride(1) == 1) return g;
  if (g.stride(0) == 0) return g.select(0, 0).contiguous().expand({M, N});
  return g.contiguous();
}

inline LinearActBackwardArgs prepare_linear_act_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                                         const at::Tensor& weight, const at::Tensor& saved,
                                                         c10::string_view activation, bool rows_apart = false) {
  check_linear_act_args(input, weight, {});
  LinearActBackwardArgs a;
  a.act = parse_activation(kLinearActOp, activation);
  a.K = weight.size(1);
  a.N = weight.size(0);
  a.M = linear_rows(input);
  TORCH_CHECK(grad_output.numel() == a.M * a.N && saved.numel() == a.M * a.N, kLinearActOp,
              ": backward got grad_output/saved of the wrong size");
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type() && saved.scalar_type() == input.scalar_type(),
              kLinearActOp, ": backward dtype mismatch");
  TORCH_CHECK(grad_output.device() == input.device() && saved.device() == input.device(), kLinearActOp,
              ": backward device mismatch");
  a.x = input.reshape({a.M, a.K});
  a.g = grad_rows(grad_output, a.M, a.N, rows_apart);
  a.s = saved.reshape({a.M, a.N}).contiguous();
  return a;
}

// A layer's shape class for its path choice (csrc/common/path_choice.h): widths, activation, saved block
// (z or output), bias.
inline std::string linear_act_shape_class(int64_t K, int64_t N, Act act, double slope, bool has_bias) {
  return std::to_string(K) + "-" + std::to_string(N) + ":" + activation_names()[int(act)] +
         (act_saves_output(act, slope) ? "" : "/z") + (has_bias ? "+b" : "");
}

// Which kernels linear_act runs for this input and layer on its device, and why: ("direct" | "gemm" on
// the CPU, "fused" | "gemm" on CUDA; reason). This may measure (once per shape class). training: a call
// recorded for backward (else one with nothing recorded, which the CPU chooses for separately).
std::tuple<std::string, std::string> linear_act_path(const at::Tensor& input, const at::Tensor& weight,
                                                     const c10::optional<at::Tensor>& bias,
                                                     const std::string& activation, double slope, bool training = true);
// Set by linear_act_cuda.cpp in CUDA builds: the path a CUDA layer (checked arguments) takes, and why.
using LinearActCudaPath = std::tuple<std::string, std::string> (*)(const at::Tensor& input, const at::Tensor& weight,
                                                                   bool has_bias, Act act, double slope);
extern LinearActCudaPath g_linear_act_cuda_path;

// fastnn::linear_act, typed: what the autograd and autocast kernels redispatch to.
using LinearActSignature = at::Tensor(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
                                      c10::string_view, double);
const c10::TypedOperatorHandle<LinearActSignature>& linear_act_op();
// The eager Python entry (fastnn.linear_act, fastnn.nn.Linear): the same op as
// torch.ops.fastnn.linear_act through the dispatcher, without the boxed call's argument conversion
// (about 1.5 us a call on Zen 4). fastnn/_ops.py keeps torch.ops for traced and __torch_function__ calls.
at::Tensor linear_act_eager(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                            const std::string& activation, double slope);

// fastnn::linear_act for a backend: its linear_act_forward without the saved tensor.
template <std::tuple<at::Tensor, at::Tensor> (*Forward)(const at::Tensor&, const at::Tensor&,
                                                        const c10::optional<at::Tensor>&, c10::string_view, double)>
at::Tensor linear_act_output_only(const at::Tensor& input, const at::Tensor& weight,
                                  const c10::optional<at::Tensor>& bias, c10::string_view activation, double slope) {
  return std::get<0>(Forward(input, weight, bias, activation, slope));
}

// The activation as torch's own differentiable op: double backward differentiates through it,
// so no derivative formula is written twice.
inline at::Tensor act_value_aten(Act act, const at::Tensor& z, double slope) {
  switch (act) {
    case Act::Identity: return z;
    case Act::Relu: return at::relu(z);
    case Act::LeakyRelu: return at::leaky_relu(z, slope);
    case Act::Sigmoid: return at::sigmoid(z);
    case Act::Tanh: return at::tanh(z);
    case Act::Gelu: return at::gelu(z);
    case Act::GeluTanh: return at::gelu(z, "tanh");
    case Act::Silu: return at::silu(z);
    case Act::Softplus: return at::softplus(z, 1, 20);
  }
  TORCH_CHECK(false, "unreachable");
}

}  // namespace fastnn
