// fastnn::mlp on CUDA. Two paths:
//  - "layers": layer by layer through linear_act's kernels (cuBLAS GEMMs and fused passes);
//  - "fused": the fully fused kernels (mlp_cuda_kernels.cu), where the chain fits them (fp16/bf16,
//    compute capability >= 8.0, every width <= kMlpFusedMaxWidth, hidden widths multiples of 16).
// Where a chain fits, the path is measured on the device once per shape class (both paths' forward and
// backward on calibration data, csrc/common/path_choice.h) and the faster is kept, in the process and on
// disk; the fixed rule (deterministic mode, empty batches, a CUDA graph captured before any measurement)
// is the per-layer path. FASTNN_MLP_FUSED forces a path for benchmarking: "0" the per-layer path, "1" or
// "2" that version of the fused kernels.
// fastnn.mlp_path(input, weights) says which path runs, and why.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdlib>
#include <string>

#include "../common/path_choice.h"
#include "mlp_common.h"
#include "mlp_cuda.h"

namespace fastnn {
namespace {

using at::Tensor;

enum { kFused = 0, kLayers = 1 };  // fused_path_query's order

struct Choice {
  bool fused;
  int version;  // of the fused kernels
};

}  // namespace

int forced_fused_version(const char* env_name, const char* op, const char* other, std::string* why) {
  const char* env = std::getenv(env_name);
  if (!env || !*env) return -1;
  const std::string v(env);
  if (v == "auto") return -1;
  TORCH_CHECK_VALUE(v == "0" || v == "1" || v == "2", op, ": ", env_name, " must be 0 (", other,
                    "), 1 or 2 (that version of the fused kernels) or auto (measured), got '", v, "'");
  if (why)
    *why = "forced by " + std::string(env_name) + "=" + v + " (" +
           (v == "0" ? std::string(other) : "version " + v + " of the fused kernels") + ")";
  return v[0] - '0';
}

PathQuery fused_path_query(const char* op, const char* other, const char* other_reason, const Tensor& input,
                           const std::string& shape) {
  PathQuery q;
  q.op = op;
  q.paths = {"fused", other};
  q.fixed_path = 1;
  q.fixed_reason = other_reason;
  q.dtype = c10::toString(input.scalar_type());
  q.batch = linear_rows(input);
  q.shape = shape + " fused-v" + std::to_string(kMlpMeasuredFusedVersion);
  // Batches beyond this are timed (and keyed) at this many rows: both paths are throughput-bound there.
  q.max_batch_class = int64_t(1) << 16;
  measure_on_cuda(q, input);
  return q;
}

std::string mlp_fused_fit_reason(const Tensor& input, at::TensorList weights) {
  const auto dt = input.scalar_type();
  if (dt != at::kHalf && dt != at::kBFloat16)
    return std::string("dtype ") + c10::toString(dt) +
           ": the fused kernels run float16/bfloat16 on tensor cores (use autocast for float32 models)";
  const auto* prop = at::cuda::getDeviceProperties(input.device().index());
  if (prop->major < 8) return "compute capability " + std::to_string(prop->major) + "." +
                              std::to_string(prop->minor) + " < 8.0";
  if (int64_t(weights.size()) > kMlpFusedMaxLayers)
    return std::to_string(weights.size()) + " layers > " + std::to_string(kMlpFusedMaxLayers);
  if (input.size(-1) == 0) return "input width 0";
  if (input.size(-1) > kMlpFusedMaxWidth)
    return "input width " + std::to_string(input.size(-1)) + " > " + std::to_string(kMlpFusedMaxWidth);
  for (size_t l = 0; l < weights.size(); ++l) {
    const int64_t n = weights[l].size(0);
    if (n == 0) return "layer " + std::to_string(l) + " width 0";
    if (n > kMlpFusedMaxWidth)
      return "layer " + std::to_string(l) + " width " + std::to_string(n) + " > " + std::to_string(kMlpFusedMaxWidth);
    if (l + 1 < weights.size() && n % kMlpFusedAlign)
      return "hidden width " + std::to_string(n) + " (layer " + std::to_string(l) + ") is not a multiple of " +
             std::to_string(kMlpFusedAlign);
  }
  return "";
}

namespace {

int half_code(const Tensor& t) { return t.scalar_type() == at::kHalf ? 2 : 3; }

int max_width(const Tensor& input, at::TensorList weights) {
  int64_t w = input.size(-1);
  for (const Tensor& t : weights) w = std::max(w, t.size(0));
  return int((w + 15) / 16 * 16);
}

// The kernels' view of the chain: contiguous weights and biases (kept alive by `keep`).
std::vector<MlpCudaLayer> kernel_layers(const std::vector<MlpLayer>& layers, at::TensorList weights,
                                        const Biases& biases, std::vector<Tensor>& keep) {
  std::vector<MlpCudaLayer> ly(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    const Tensor w = keep.emplace_back(weights[l].contiguous());
    ly[l].w = w.data_ptr();
    // Backward reads no bias (only whether there is one): a caller may leave it out there.
    ly[l].b = defined_at(biases, l) ? keep.emplace_back(biases.get(l)->contiguous()).data_ptr() : nullptr;
    ly[l].in = int(w.size(1));
    ly[l].out = int(w.size(0));
    ly[l].act = int(layers[l].act);
    ly[l].slope = float(layers[l].slope);
    ly[l].saves_output = layers[l].saves_output;
  }
  return ly;
}

}  // namespace

std::tuple<Tensor, Tensor> mlp_fused_forward(int version, const std::vector<MlpLayer>& layers, const Tensor& input,
                                             at::TensorList weights, const Biases& biases, bool training) {
  c10::cuda::CUDAGuard guard(input.device());
  const int64_t M = linear_rows(input), K0 = weights[0].size(1), NL = weights[weights.size() - 1].size(0);
  const auto opts = input.options();
  std::vector<Tensor> keep;
  auto ly = kernel_layers(layers, weights, biases, keep);
  const Tensor x = input.reshape({M, K0}).contiguous();
  Tensor out = at::empty(linear_out_shape(input, NL), opts);
  Tensor arena = at::empty({training ? arena_size(layers, weights, M) : 0}, opts);
  if (training) {
    const auto views = arena_views(arena, out, layers, input, weights);
    for (size_t l = 0; l < ly.size(); ++l)
      ly[l].saved = (l + 1 == ly.size() && layers[l].saves_output) ? nullptr : views[l].data_ptr();
  }
  cuda_mlp_fused_forward(version, half_code(input), x.data_ptr(), out.data_ptr(), ly.data(), int(ly.size()), M,
                         max_width(input, weights), at::cuda::getCurrentCUDAStream().stream());
  return {out, arena};
}

Grads mlp_fused_backward(int version, const std::vector<MlpLayer>& layers, const Tensor& grad_output,
                         const Tensor& input, at::TensorList weights, const Biases& biases, const Tensor& arena,
                         const Tensor& output, const std::vector<std::string>& activations, at::ArrayRef<double> slopes,
                         bool input_grad) {
  c10::cuda::CUDAGuard guard(input.device());
  const size_t L = layers.size();
  const int64_t M = linear_rows(input), K0 = weights[0].size(1), NL = weights[L - 1].size(0);
  TORCH_CHECK(grad_output.numel() == M * NL && grad_output.scalar_type() == input.scalar_type(), kMlpOp,
              ": backward got a grad_output of the wrong size or dtype");
  const auto opts = input.options();
  std::vector<Tensor> keep;
  auto ly = kernel_layers(layers, weights, biases, keep);
  auto saved = arena_views(arena, output, layers, input, weights);
  const Tensor g = grad_output.reshape({M, NL}).contiguous();
  const int64_t blocks = cuda_mlp_fused_blocks(M, max_width(input, weights));
  int64_t dz_total = 0;
  for (const Tensor& w : weights) dz_total += M * w.size(0);
  Tensor dz_arena = at::empty({dz_total}, opts);
  std::vector<Tensor> dz(L), partial(L);
  int64_t off = 0;
  for (size_t l = 0; l < L; ++l) {
    const int64_t N = weights[l].size(0);
    if (!saved[l].is_contiguous()) saved[l] = saved[l].contiguous();
    ly[l].saved = saved[l].data_ptr();
    dz[l] = dz_arena.narrow(0, off, M * N).view({M, N});
    off += M * N;
    ly[l].dz = dz[l].data_ptr();
    if (layers[l].has_bias) {
      partial[l] = at::empty({blocks, N}, opts.dtype(at::kFloat));
      ly[l].bias_partial = partial[l].data_ptr<float>();
    }
  }
  Tensor gi = input_grad ? at::empty({M, K0}, opts) : at::empty({0}, opts);
  cuda_mlp_fused_backward(version, half_code(input), g.data_ptr(), input_grad ? gi.data_ptr() : nullptr, ly.data(),
                          int(L), M, max_width(input, weights), at::cuda::getCurrentCUDAStream().stream());
  // Weight gradients: one cuBLAS GEMM per layer over the whole batch, dW_l = dz_l^T x_{l-1}; bias
  // gradients: the per-block sums added in block order (deterministic).
  std::vector<Tensor> gw(L), gb(L);
  const Tensor x = input.reshape({M, K0});
  for (size_t l = 0; l < L; ++l) {
    Tensor prev = x;
    if (l > 0) {
      prev = layers[l - 1].saves_output ? saved[l - 1] : mlp_activation(saved[l - 1], activations[l - 1], slopes[l - 1]);
      prev = prev.reshape({M, weights[l].size(1)});
    }
    gw[l] = at::mm(dz[l].t(), prev);
    gb[l] = layers[l].has_bias ? partial[l].sum(0).to(input.scalar_type()) : at::empty({0}, opts);
  }
  return {input_grad ? gi.view(input.sizes()) : gi, gw, gb};
}

namespace {

// The path of a checked CUDA chain: not fitting the fused kernels, forced, or measured (see the top).
Choice mlp_cuda_choice(const Tensor& input, at::TensorList weights, const Biases& biases,
                       const std::vector<MlpLayer>& layers, std::string* why) {
  if (std::string r = mlp_fused_fit_reason(input, weights); !r.empty()) {
    if (why) *why = std::move(r);
    return {false, 0};
  }
  if (const int v = forced_fused_version("FASTNN_MLP_FUSED", kMlpOp, "the per-layer path", why); v >= 0)
    return {v > 0, v};
  PathQuery q = fused_path_query(kMlpOp, "layers", "the per-layer path (cuBLAS GEMMs and fused passes)", input,
                                 mlp_shape_class(weights, layers));
  // Both directions on calibration data (made at the first run, not on cached look-ups), each path as the
  // op runs it; no input gradient.
  MlpCalibration d;  // made at the first run
  q.run = [&](int p, int64_t rows) {
    if (!d.x.defined()) d = mlp_calibration(input, weights, layers, rows);
    if (p == kFused) {
      auto [y, arena] = mlp_fused_forward(kMlpMeasuredFusedVersion, layers, d.x, weights, biases, /*training=*/true);
      mlp_fused_backward(kMlpMeasuredFusedVersion, layers, d.g, d.x, weights, biases, arena, y, d.names, d.slopes, false);
    } else {
      auto [y, arena] = forward_layers(layers, d.x, weights, biases, d.names, d.slopes);
      backward_layers(layers, d.g, d.x, weights, arena, y, d.names, d.slopes, false);
    }
  };
  const int p = choose_path(q, why);
  return {p == kFused, p == kFused ? kMlpMeasuredFusedVersion : 0};
}

std::tuple<std::string, std::string> mlp_cuda_path(const Tensor& input, at::TensorList weights, const Biases& biases,
                                                   const std::vector<MlpLayer>& layers) {
  std::string why;
  const Choice c = mlp_cuda_choice(input, weights, biases, layers, &why);
  return {c.fused ? "fused" : "layers", why};
}

std::tuple<Tensor, Tensor> mlp_forward_cuda(const Tensor& input, at::TensorList weights, const Biases& biases,
                                            const std::vector<std::string>& activations,
                                            at::ArrayRef<double> slopes) {
  auto layers = check_mlp_args(input, weights, biases, activations, slopes);
  const Choice c = mlp_cuda_choice(input, weights, biases, layers, nullptr);
  if (!c.fused) return forward_layers(layers, input, weights, biases, activations, slopes);
  return mlp_fused_forward(c.version, layers, input, weights, biases, /*training=*/true);
}

Tensor mlp_output_only_cuda(const Tensor& input, at::TensorList weights, const Biases& biases,
                            const std::vector<std::string>& activations, at::ArrayRef<double> slopes) {
  auto layers = check_mlp_args(input, weights, biases, activations, slopes);
  const Choice c = mlp_cuda_choice(input, weights, biases, layers, nullptr);
  if (!c.fused) return std::get<0>(forward_layers(layers, input, weights, biases, activations, slopes));
  return std::get<0>(mlp_fused_forward(c.version, layers, input, weights, biases, /*training=*/false));
}

Grads mlp_backward_cuda(const Tensor& grad_output, const Tensor& input, at::TensorList weights, const Biases& biases,
                        const Tensor& arena, const Tensor& output, const std::vector<std::string>& activations,
                        at::ArrayRef<double> slopes, bool input_grad) {
  auto layers = check_mlp_args(input, weights, biases, activations, slopes);
  const Choice c = mlp_cuda_choice(input, weights, biases, layers, nullptr);
  if (!c.fused)
    return backward_layers(layers, grad_output, input, weights, arena, output, activations, slopes, input_grad);
  return mlp_fused_backward(c.version, layers, grad_output, input, weights, biases, arena, output, activations, slopes,
                        input_grad);
}

struct Register {
  Register() { g_mlp_cuda_path = &mlp_cuda_path; }
} register_cuda_path;

}  // namespace

TORCH_LIBRARY_IMPL(fastnn, CUDA, m) {
  m.impl("mlp", &mlp_output_only_cuda);
  m.impl("mlp_forward", &mlp_forward_cuda);
  m.impl("mlp_backward", &mlp_backward_cuda);
}

}  // namespace fastnn
