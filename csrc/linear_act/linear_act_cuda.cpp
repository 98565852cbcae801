// fastnn::linear_act on CUDA. Two paths:
//  - "gemm": cuBLAS GEMMs (through ATen) around the fused passes of linear_act_cuda_kernels.cu;
//  - "fused": the one-layer case of the fully fused MLP kernels (csrc/mlp/mlp_cuda_kernels.cu), where the
//    layer fits them (fp16/bf16, compute capability >= 8.0, in and out features <= 128): GEMM, bias and
//    activation in one kernel; backward: the activation's derivative, the bias sums and the input's
//    gradient in one kernel, the weight's gradient by cuBLAS.
// Where a layer fits, the path is measured on the device once per shape class (both directions on
// calibration data, csrc/common/path_choice.h) and the faster is kept, as fastnn.mlp's path is; the fixed
// rule (deterministic mode, empty batches, a CUDA graph captured before any measurement) is "gemm".
// FASTNN_LINEAR_ACT_FUSED forces a path for benchmarking: "0" gemm, "1" or "2" that version of the fused
// kernels. Everything runs on the current stream (CUDA graphs and torch.compile's reduce-overhead mode
// capture it).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/path_choice.h"
#include "../mlp/mlp_common.h"
#include "../mlp/mlp_cuda.h"
#include "linear_act_common.h"
#include "linear_act_cuda.h"

namespace fastnn {
namespace {

using at::Tensor;

int cuda_dtype(const Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return 0;
    case at::kDouble: return 1;
    case at::kHalf: return 2;
    case at::kBFloat16: return 3;
    default: TORCH_CHECK(false, kLinearActOp, ": unsupported dtype ", t.scalar_type(), " on CUDA");
  }
}

void check_cuda(const Tensor& t, const char* what) {
  TORCH_CHECK(t.is_cuda(), kLinearActOp, ": ", what, " must be a CUDA tensor, got one on ", t.device());
}

enum { kFused = 0, kGemm = 1 };  // fused_path_query's order

struct Path {
  bool fused;
  int version;  // of the fused kernels
};

// The layer as the fused MLP kernels take it: a chain of one.
std::vector<MlpLayer> one_layer(Act act, double slope, bool has_bias) {
  return {MlpLayer{act, slope, has_bias, act_saves_output(act, slope)}};
}

std::tuple<Tensor, Tensor> forward_fused(int version, const Tensor& input, const Tensor& weight,
                                         const c10::optional<Tensor>& bias, Act act, double slope) {
  const bool has_bias = bias.has_value() && bias->defined();
  Biases b;
  b.push_back(has_bias ? bias : c10::nullopt);
  auto [y, arena] = mlp_fused_forward(version, one_layer(act, slope, has_bias), input, weight, b, /*training=*/true);
  // The arena holds the layer's z where backward reads z, else nothing (backward reads y).
  return {y, act_saves_output(act, slope) ? arena : arena.view(y.sizes())};
}

std::tuple<Tensor, Tensor, Tensor> backward_fused(int version, const Tensor& grad_output, const Tensor& input,
                                                  const Tensor& weight, const Tensor& saved, bool has_bias, Act act,
                                                  double slope, std::array<bool, 2> mask) {
  const std::string name = activation_names()[int(act)];
  const auto a = prepare_linear_act_backward(grad_output, input, weight, saved, name);
  const auto opts = input.options();
  const bool from_output = act_saves_output(act, slope);
  Biases no_bias;  // backward needs only whether there is one
  no_bias.push_back(c10::nullopt);
  auto [gi, gw, gb] =
      mlp_fused_backward(version, one_layer(act, slope, has_bias), a.g, input, weight, no_bias,
                         from_output ? at::empty({0}, opts) : a.s.view({-1}), from_output ? a.s : Tensor(), {name},
                         {slope}, mask[0]);
  return {gi, mask[1] ? gw[0] : at::empty({0}, opts), gb[0]};
}

std::tuple<Tensor, Tensor> forward_gemm(const Tensor& input, const Tensor& weight, const c10::optional<Tensor>& bias,
                                        Act act, double slope);
std::tuple<Tensor, Tensor, Tensor> backward_gemm(const Tensor& grad_output, const Tensor& input, const Tensor& weight,
                                                 const Tensor& saved, bool has_bias, Act act, double slope,
                                                 std::array<bool, 2> mask);

// The path of a checked CUDA layer: not fitting the fused kernels, forced, or measured (see the top).
Path linear_act_cuda_choice(const Tensor& input, const Tensor& weight, bool has_bias, Act act, double slope,
                            std::string* why) {
  if (std::string r = mlp_fused_fit_reason(input, weight); !r.empty()) {
    if (why) *why = "GEMM + fused passes: the fused kernels do not take this layer (" + r + ")";
    return {false, 0};
  }
  if (const int v = forced_fused_version("FASTNN_LINEAR_ACT_FUSED", kLinearActOp, "GEMM + fused passes", why);
      v >= 0)
    return {v > 0, v};
  const int64_t K = weight.size(1), N = weight.size(0);
  PathQuery q = fused_path_query(kLinearActOp, "gemm", "GEMM + fused passes", input,
                                 linear_act_shape_class(K, N, act, slope, has_bias));
  Tensor x, g;  // calibration data, made at the first run
  c10::optional<Tensor> b;
  q.run = [&](int p, int64_t rows) {
    if (!x.defined()) {
      at::Generator gen = path_generator();
      const auto cpu = input.options().device(at::kCPU);
      x = at::randn({rows, K}, gen, cpu).to(input.device());
      g = at::randn({rows, N}, gen, cpu).to(input.device());
      if (has_bias) b = at::zeros({N}, input.options());
    }
    const bool fused = p == kFused;
    auto [y, z] = fused ? forward_fused(kMlpMeasuredFusedVersion, x, weight, b, act, slope)
                        : forward_gemm(x, weight, b, act, slope);
    const Tensor& s = act_saves_output(act, slope) ? y : z;
    if (fused)
      backward_fused(kMlpMeasuredFusedVersion, g, x, weight, s, has_bias, act, slope, {false, true});
    else
      backward_gemm(g, x, weight, s, has_bias, act, slope, {false, true});
  };
  const int p = choose_path(q, why);
  return {p == kFused, p == kFused ? kMlpMeasuredFusedVersion : 0};
}

std::tuple<std::string, std::string> linear_act_cuda_path(const Tensor& input, const Tensor& weight, bool has_bias,
                                                          Act act, double slope) {
  std::string why;
  const Path p = linear_act_cuda_choice(input, weight, has_bias, act, slope, &why);
  return {p.fused ? "fused" : "gemm", why};
}

std::tuple<Tensor, Tensor> linear_act_forward_cuda(const Tensor& input, const Tensor& weight,
                                                   const c10::optional<Tensor>& bias, c10::string_view activation,
                                                   double slope) {
  check_linear_act_args(input, weight, bias);
  check_cuda(input, "input");
  const Act act = parse_activation(kLinearActOp, activation);
  cuda_dtype(input);  // an unsupported dtype is refused before any path runs
  c10::cuda::CUDAGuard guard(input.device());
  const bool has_bias = bias.has_value() && bias->defined();
  const Path p = linear_act_cuda_choice(input, weight, has_bias, act, slope, nullptr);
  return p.fused ? forward_fused(p.version, input, weight, bias, act, slope)
                 : forward_gemm(input, weight, bias, act, slope);
}

std::tuple<Tensor, Tensor, Tensor> linear_act_backward_cuda(const Tensor& grad_output, const Tensor& input,
                                                            const Tensor& weight, const Tensor& saved, bool has_bias,
                                                            c10::string_view activation, double slope,
                                                            std::array<bool, 2> mask) {
  check_cuda(input, "input");
  check_linear_act_args(input, weight, {});
  const Act act = parse_activation(kLinearActOp, activation);
  cuda_dtype(input);
  c10::cuda::CUDAGuard guard(input.device());
  const Path p = linear_act_cuda_choice(input, weight, has_bias, act, slope, nullptr);
  return p.fused ? backward_fused(p.version, grad_output, input, weight, saved, has_bias, act, slope, mask)
                 : backward_gemm(grad_output, input, weight, saved, has_bias, act, slope, mask);
}

std::tuple<Tensor, Tensor> forward_gemm(const Tensor& input, const Tensor& weight, const c10::optional<Tensor>& bias,
                                        Act act, double slope) {
  const int dt = cuda_dtype(input);
  const int64_t K = weight.size(1), N = weight.size(0), M = linear_rows(input);
  const Tensor x = input.reshape({M, K});
  const bool has_bias = bias.has_value() && bias->defined();
  const Tensor b = has_bias ? bias->contiguous() : Tensor();
  const bool save_z = !act_saves_output(act, slope);
  // ReLU in half precision: cuBLASLt's RELU_BIAS epilogue writes y from the GEMM (backward reads y),
  // no separate pass. Measured on an H100 (RESULTS.md): it wins in bf16/fp16 and loses in fp32,
  // where the GEMM + one vectorized pass is faster.
  const bool half = input.scalar_type() == at::kHalf || input.scalar_type() == at::kBFloat16;
  if (act == Act::Relu && has_bias && half && M > 0 && K > 0) {
    Tensor y = at::_addmm_activation(b, x, weight.t(), 1, 1, /*use_gelu=*/false);
    if (!y.is_contiguous()) y = y.contiguous();
    return {y.view(linear_out_shape(input, N)), at::empty({0}, input.options())};
  }
  // Bias inside the GEMM (addmm, as F.linear); the GEMM output is z when backward needs it.
  Tensor pre = has_bias ? at::addmm(b, x, weight.t()) : at::mm(x, weight.t());
  if (!pre.is_contiguous()) pre = pre.contiguous();
  Tensor y = save_z ? at::empty({M, N}, input.options()) : pre;
  Tensor z = save_z ? pre : at::empty({0}, input.options());
  if (act != Act::Identity)
    cuda_linear_act_epilogue(dt, pre.data_ptr(), y.data_ptr(), M * N, int(act), slope,
                             at::cuda::getCurrentCUDAStream().stream());
  const auto shape = linear_out_shape(input, N);
  return {y.view(shape), save_z ? z.view(shape) : z};
}

std::tuple<Tensor, Tensor, Tensor> backward_gemm(const Tensor& grad_output, const Tensor& input, const Tensor& weight,
                                                 const Tensor& saved, bool has_bias, Act act_, double slope,
                                                 std::array<bool, 2> mask) {
  const auto [act, M, N, K, x, g, s] =
      prepare_linear_act_backward(grad_output, input, weight, saved, activation_names()[int(act_)]);
  const int dt = cuda_dtype(input);
  const auto opts = input.options();
  Tensor gz = at::empty({M, N}, opts);
  Tensor gb = has_bias ? at::empty({N}, opts) : at::empty({0}, opts);
  const auto acc = input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  Tensor partial = has_bias ? at::empty({cuda_bias_grad_chunks(M) * N}, opts.dtype(acc)) : Tensor();
  cuda_linear_act_backward_act_bias(dt, g.data_ptr(), s.data_ptr(), gz.data_ptr(), has_bias ? gb.data_ptr() : nullptr,
                                    has_bias ? partial.data_ptr() : nullptr, M, N, int(act), slope,
                                    at::cuda::getCurrentCUDAStream().stream());
  Tensor gi = mask[0] ? at::mm(gz, weight).view(input.sizes()) : at::empty({0}, opts);
  Tensor gw = mask[1] ? at::mm(gz.t(), x) : at::empty({0}, opts);
  return {gi, gw, gb};
}

Tensor activation_cuda(const Tensor& z, c10::string_view activation, double slope) {
  const Act act = parse_activation("fastnn.activation", activation);
  check_cuda(z, "z");
  c10::cuda::CUDAGuard guard(z.device());
  const Tensor zc = z.contiguous();
  Tensor y = at::empty_like(zc);
  if (zc.numel())
    cuda_linear_act_epilogue(cuda_dtype(zc), zc.data_ptr(), y.data_ptr(), zc.numel(), int(act), slope,
                             at::cuda::getCurrentCUDAStream().stream());
  return y;
}

struct Register {
  Register() { g_linear_act_cuda_path = &linear_act_cuda_path; }
} register_cuda_path;

}  // namespace

TORCH_LIBRARY_IMPL(fastnn, CUDA, m) {
  m.impl("linear_act", &linear_act_output_only<&linear_act_forward_cuda>);
  m.impl("linear_act_forward", &linear_act_forward_cuda);
  m.impl("linear_act_backward", &linear_act_backward_cuda);
  m.impl("activation", &activation_cuda);
}

}  // namespace fastnn
