// fastnn::linear_act on CUDA: cuBLAS GEMMs (through ATen, on the current stream) around the fused
// passes of linear_act_cuda_kernels.cu, launched on the current stream too (CUDA graphs and
// torch.compile's reduce-overhead mode capture them correctly).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

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

std::tuple<Tensor, Tensor> linear_act_forward_cuda(const Tensor& input, const Tensor& weight,
                                                   const c10::optional<Tensor>& bias, c10::string_view activation,
                                                   double slope) {
  check_linear_act_args(input, weight, bias);
  check_cuda(input, "input");
  const Act act = parse_activation(kLinearActOp, activation);
  const int dt = cuda_dtype(input);
  c10::cuda::CUDAGuard guard(input.device());
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

std::tuple<Tensor, Tensor, Tensor> linear_act_backward_cuda(const Tensor& grad_output, const Tensor& input,
                                                            const Tensor& weight, const Tensor& saved, bool has_bias,
                                                            c10::string_view activation, double slope,
                                                            std::array<bool, 2> mask) {
  check_cuda(input, "input");
  const auto [act, M, N, K, x, g, s] = prepare_linear_act_backward(grad_output, input, weight, saved, activation);
  const int dt = cuda_dtype(input);
  c10::cuda::CUDAGuard guard(input.device());
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

}  // namespace

TORCH_LIBRARY_IMPL(fastnn, CUDA, m) {
  m.impl("linear_act", &linear_act_output_only<&linear_act_forward_cuda>);
  m.impl("linear_act_forward", &linear_act_forward_cuda);
  m.impl("linear_act_backward", &linear_act_backward_cuda);
  m.impl("activation", &activation_cuda);
}

}  // namespace fastnn
