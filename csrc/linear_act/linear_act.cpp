// fastnn::linear_act on the CPU, and its autograd (for every backend).
//
// Forward: the GEMM goes to ATen/BLAS unless in_features is small, where a hand-written kernel
// computes the whole layer in one pass (BLAS call overhead dominates there); bias and activation
// are one vectorized pass over the GEMM output. Backward: activation derivative and bias-gradient
// reduction in one pass, then two GEMMs (or, for small in_features, everything in one pass).
#include <ATen/autocast_mode.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>

#include "../common/autograd_node.h"
#include "../common/path_choice.h"
#include "../cpu_isa/cpu_isa.h"
#include "linear_act_common.h"

namespace fastnn {
namespace {

using at::Tensor;
using torch::autograd::variable_list;

// The one-pass kernels ("direct") against BLAS + the fused passes ("gemm"): measured per shape class
// where in_features <= kDirectCandidateMaxK; the fixed rule (deterministic mode, empty batches) takes
// the direct kernels for in_features <= kDirectMaxK.
constexpr int64_t kDirectMaxK = 16;
constexpr int64_t kDirectCandidateMaxK = 64;
// bfloat16 also "gemm_f32": the GEMMs on operands widened to float32 (exact), the float32 sums rounded
// once to bfloat16, which is what torch's bfloat16 GEMM computes; where a CPU has no bfloat16 dot
// products torch's ran 4-11x slower than this (Zen 3, benchmarks/RESULTS.md), where it has them it
// may win. Measured per shape class like the rest.
enum { kDirect = 0, kGemm = 1, kGemmF32 = 2 };
constexpr const char* kPathNames[] = {"direct", "gemm", "gemm_f32"};

// output_only: no pre-activation is kept (z comes back empty); y has the same bits either way.
std::tuple<Tensor, Tensor> forward_path(const Tensor& input, const Tensor& weight, const c10::optional<Tensor>& bias,
                                        Act act, double slope, int path, bool output_only = false);

// a @ b (+ bias) in a's dtype; f32: computed in float32 and rounded once (bfloat16's "gemm_f32").
Tensor mm_as(bool f32, const Tensor& a, const Tensor& b) {
  return f32 ? at::mm(a.to(at::kFloat), b.to(at::kFloat)).to(a.scalar_type()) : at::mm(a, b);
}
Tensor addmm_as(bool f32, const Tensor& bias, const Tensor& a, const Tensor& b) {
  return f32 ? at::addmm(bias.to(at::kFloat), a.to(at::kFloat), b.to(at::kFloat)).to(a.scalar_type())
             : at::addmm(bias, a, b);
}
std::tuple<Tensor, Tensor, Tensor> backward_path(const Tensor& grad_output, const Tensor& input, const Tensor& weight,
                                                 const Tensor& saved, bool has_bias, Act act, double slope,
                                                 std::array<bool, 2> mask, int path);

// kDirect, kGemm or (bfloat16) kGemmF32: measured once per shape class on this machine (csrc/common/path_choice.h),
// the fixed rule for empty batches and in deterministic mode. why, when given, receives the reason.
// output_only: the choice for calls with nothing recorded, measured on the forward alone (what those
// calls run): which path wins can differ between the two workloads.
int ask_linear_act_cpu_path(const Tensor& input, const Tensor& weight, bool has_bias, Act act, double slope,
                            std::string* why, bool output_only = false) {
  const int64_t K = weight.size(1), N = weight.size(0);
  const bool bf16 = input.scalar_type() == at::kBFloat16;
  if (K > kDirectCandidateMaxK && !bf16) {
    if (why)
      *why = "in_features > " + std::to_string(kDirectCandidateMaxK) + ": the one-pass kernels are not a candidate";
    return kGemm;
  }
  const int64_t M = linear_rows(input);
  std::vector<int> cand;  // the candidates, in the order of q.paths
  if (K <= kDirectCandidateMaxK) cand.push_back(kDirect);
  cand.push_back(kGemm);
  if (bf16) cand.push_back(kGemmF32);
  PathQuery q;
  q.op = kLinearActOp;
  for (int c : cand) q.paths.push_back(kPathNames[c]);
  const int fixed = K <= kDirectMaxK ? kDirect : kGemm;
  q.fixed_path = int(std::find(cand.begin(), cand.end(), fixed) - cand.begin());
  q.fixed_reason = K <= kDirectMaxK ? "in_features <= 16" : "in_features > 16";
  static_assert(kDirectMaxK == 16, "the fixed rule's reason names the bound");
  q.dtype = c10::toString(input.scalar_type());
  q.batch = M;
  // bfloat16 keys name the float32-GEMM candidate, so choices kept from before it existed are not reused.
  q.shape = linear_act_shape_class(K, N, act, slope, has_bias) + (bf16 ? " +gemm_f32" : "") + (output_only ? " fwd" : "");
  if (output_only) q.work = "fwd";
  Tensor x, g;  // calibration data, made at the first run
  c10::optional<Tensor> b;
  q.run = [&](int p, int64_t rows) {
    if (!x.defined()) {
      at::Generator gen = path_generator();
      x = at::randn({rows, K}, gen, input.options());
      g = at::randn({rows, N}, gen, input.options());
      if (has_bias) b = at::zeros({N}, input.options());
    }
    auto [y, z] = forward_path(x, weight, b, act, slope, cand[p], output_only);
    if (output_only) return;
    backward_path(g, x, weight, act_saves_output(act, slope) ? y : z, has_bias, act, slope, {false, true},
                  cand[p]);
  };
  return cand[choose_path(q, why)];
}

// The same, asked by every call (forward and backward): this thread's recent answers first.
int linear_act_cpu_path(const Tensor& input, const Tensor& weight, bool has_bias, Act act, double slope,
                        bool output_only = false) {
  const int64_t M = linear_rows(input);
  if (M == 0) return ask_linear_act_cpu_path(input, weight, has_bias, act, slope, nullptr, output_only);
  int64_t slope_bits;
  static_assert(sizeof(slope_bits) == sizeof(slope), "slope keys by its bits");
  std::memcpy(&slope_bits, &slope, sizeof(slope));
  const int64_t rest = int64_t(input.scalar_type()) | int64_t(act) << 8 | int64_t(has_bias) << 16 |
                       int64_t(output_only) << 17 | path_batch_class(M, kMaxBatchClass) << 20;
  return remembered_cpu_path({weight.size(1), weight.size(0), slope_bits, rest}, [&] {
    return ask_linear_act_cpu_path(input, weight, has_bias, act, slope, nullptr, output_only);
  });
}

std::tuple<Tensor, Tensor> linear_act_forward_cpu(const Tensor& input, const Tensor& weight,
                                                  const c10::optional<Tensor>& bias, c10::string_view activation,
                                                  double slope) {
  check_linear_act_args(input, weight, bias);
  const Act act = parse_activation(kLinearActOp, activation);
  const bool has_bias = bias.has_value() && bias->defined();
  return forward_path(input, weight, bias, act, slope, linear_act_cpu_path(input, weight, has_bias, act, slope));
}

// fastnn::linear_act (nothing recorded): as the forward, without keeping z.
Tensor linear_act_output_only_cpu(const Tensor& input, const Tensor& weight, const c10::optional<Tensor>& bias,
                                  c10::string_view activation, double slope) {
  check_linear_act_args(input, weight, bias);
  const Act act = parse_activation(kLinearActOp, activation);
  const bool has_bias = bias.has_value() && bias->defined();
  return std::get<0>(forward_path(input, weight, bias, act, slope,
                                  linear_act_cpu_path(input, weight, has_bias, act, slope, /*output_only=*/true),
                                  /*output_only=*/true));
}

std::tuple<Tensor, Tensor> forward_path(const Tensor& input, const Tensor& weight, const c10::optional<Tensor>& bias,
                                        Act act, double slope, int path, bool output_only) {
  const DType dt = cpu_dtype(input, kLinearActOp);
  const int64_t K = weight.size(1), N = weight.size(0);
  const int64_t M = linear_rows(input);
  const Tensor x = input.reshape({M, K});
  const bool has_bias = bias.has_value() && bias->defined();
  const Tensor b = has_bias ? bias->contiguous() : Tensor();
  const bool save_z = !act_saves_output(act, slope) && !output_only;
  const auto& kern = linear_act_cpu_kernels();
  const bool f32 = path == kGemmF32;
  Tensor y, z;
  if (path == kDirect) {
    y = at::empty({M, N}, input.options());
    z = save_z ? at::empty({M, N}, input.options()) : at::empty({0}, input.options());
    const Tensor xc = x.contiguous(), wt = weight.t().contiguous();
    kern.forward_direct(dt, xc.data_ptr(), wt.data_ptr(), has_bias ? b.data_ptr() : nullptr, y.data_ptr(),
                        save_z ? z.data_ptr() : nullptr, M, N, K, int(act), slope);
  } else {
    // Backward needs z: the GEMM with the bias (addmm) writes it and the activation goes to a new y
    // (no pass writes z separately). Otherwise the bias rides along in the in-place activation pass,
    // which is cheaper than addmm's own bias handling.
    // Output only, z's GEMM all the same: the activation then goes over it in place, so y has the
    // bits the recorded forward gives, without a second [M, N] buffer.
    if (!act_saves_output(act, slope)) {
      z = has_bias ? addmm_as(f32, b, x, weight.t()) : mm_as(f32, x, weight.t());
      if (!z.is_contiguous()) z = z.contiguous();
      y = save_z ? at::empty({M, N}, input.options()) : z;
      kern.forward_epilogue(dt, z.data_ptr(), nullptr, y.data_ptr(), M, N, int(act), slope);
      if (!save_z) z = at::empty({0}, input.options());
    } else {
      // bfloat16: the bias goes into the GEMM's float32 sums (one rounding, as torch's addmm), not
      // onto an already rounded product.
      // Identity has no pass to carry the bias, so it goes into the GEMM there too.
      const bool bias_in_gemm = has_bias && (dt == DType::BF16 || act == Act::Identity);
      y = bias_in_gemm ? addmm_as(f32, b, x, weight.t()) : mm_as(f32, x, weight.t());
      if (!y.is_contiguous()) y = y.contiguous();
      z = at::empty({0}, input.options());
      if (act != Act::Identity || (has_bias && !bias_in_gemm))
        kern.forward_epilogue(dt, y.data_ptr(), has_bias && !bias_in_gemm ? b.data_ptr() : nullptr, y.data_ptr(), M,
                              N, int(act), slope);
    }
  }
  const auto shape = linear_out_shape(input, N);
  return {y.view(shape), save_z ? z.view(shape) : z};
}

std::tuple<Tensor, Tensor, Tensor> linear_act_backward_cpu(const Tensor& grad_output, const Tensor& input,
                                                           const Tensor& weight, const Tensor& saved,
                                                           bool has_bias, c10::string_view activation,
                                                           double slope, std::array<bool, 2> mask) {
  check_linear_act_args(input, weight, {});
  const Act act = parse_activation(kLinearActOp, activation);
  return backward_path(grad_output, input, weight, saved, has_bias, act, slope, mask,
                       linear_act_cpu_path(input, weight, has_bias, act, slope));
}

std::tuple<Tensor, Tensor, Tensor> backward_path(const Tensor& grad_output, const Tensor& input, const Tensor& weight,
                                                 const Tensor& saved, bool has_bias, Act act_, double slope,
                                                 std::array<bool, 2> mask, int path) {
  const auto [act, M, N, K, x, g, s] = prepare_linear_act_backward(
      grad_output, input, weight, saved, activation_names()[int(act_)], /*rows_apart=*/true);
  const int64_t ldg = g.stride(0);  // the kernels read g's rows where they lie
  const DType dt = cpu_dtype(input, kLinearActOp);
  const auto opts = input.options();
  Tensor gb = has_bias ? at::empty({N}, opts) : at::empty({0}, opts);
  Tensor gi, gw;
  const auto& kern = linear_act_cpu_kernels();
  if (path == kDirect) {
    gi = mask[0] ? at::empty({M, K}, opts) : at::empty({0}, opts);
    gw = mask[1] ? at::empty({N, K}, opts) : at::empty({0}, opts);
    const Tensor xc = x.contiguous(), wc = weight.contiguous();
    kern.backward_direct(dt, g.data_ptr(), ldg, s.data_ptr(), xc.data_ptr(), wc.data_ptr(),
                         mask[0] ? gi.data_ptr() : nullptr, mask[1] ? gw.data_ptr() : nullptr,
                         has_bias ? gb.data_ptr() : nullptr, M, N, K, int(act), slope);
  } else {
    // Identity: gz is g itself, made contiguous (an operand of both GEMMs); only the bias gradient
    // needs a (read-only) pass, over that copy as before.
    const bool identity = act == Act::Identity;
    Tensor gz = identity ? g.contiguous() : at::empty({M, N}, opts);
    const Tensor& gp = identity ? gz : g;
    if (!identity || has_bias)
      kern.backward_act_bias(dt, gp.data_ptr(), gp.stride(0), s.data_ptr(), identity ? nullptr : gz.data_ptr(),
                             has_bias ? gb.data_ptr() : nullptr, M, N, int(act), slope);
    const bool f32 = path == kGemmF32;
    gi = mask[0] ? mm_as(f32, gz, weight) : at::empty({0}, opts);
    gw = mask[1] ? mm_as(f32, gz.t(), x) : at::empty({0}, opts);
  }
  if (mask[0]) gi = gi.view(input.sizes());
  return {gi, gw, gb};
}

}  // namespace

LinearActCudaPath g_linear_act_cuda_path = nullptr;

const c10::TypedOperatorHandle<LinearActSignature>& linear_act_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("fastnn::linear_act", "").typed<LinearActSignature>();
  return op;
}

Tensor linear_act_eager(const Tensor& input, const Tensor& weight, const c10::optional<Tensor>& bias,
                        const std::string& activation, double slope) {
  return linear_act_op().call(input, weight, bias, activation, slope);
}

std::tuple<std::string, std::string> linear_act_path(const Tensor& input, const Tensor& weight,
                                                     const c10::optional<Tensor>& bias, const std::string& activation,
                                                     double slope, bool training) {
  if (!input.device().is_cpu() && !(input.is_cuda() && g_linear_act_cuda_path))
    return {"gemm", "on " + input.device().str() + " every shape runs a GEMM + fused passes"};
  // Under autocast the caller passes the input in the autocast dtype; the weight follows it.
  const Tensor w = weight.scalar_type() == input.scalar_type() ? weight : weight.to(input.scalar_type());
  check_linear_act_args(input, w, {});
  const Act act = parse_activation(kLinearActOp, activation);
  if (input.is_cuda()) return g_linear_act_cuda_path(input, w, bias.has_value() && bias->defined(), act, slope);
  std::string why;
  const int path = ask_linear_act_cpu_path(input, w, bias.has_value() && bias->defined(), act, slope, &why, !training);
  return {kPathNames[path], why};
}

namespace {

// fastnn::activation: y = act(z), the forward kernels' activation pass on its own.
Tensor activation_cpu(const Tensor& z, c10::string_view activation, double slope) {
  constexpr const char* op = "fastnn.activation";
  const Act act = parse_activation(op, activation);
  const Tensor zc = z.contiguous();
  Tensor y = at::empty_like(zc);
  const int64_t N = zc.dim() ? zc.size(-1) : 1;
  if (zc.numel())
    linear_act_cpu_kernels().forward_epilogue(cpu_dtype(zc, op), zc.data_ptr(), nullptr, y.data_ptr(), zc.numel() / N,
                                              N, int(act), slope);
  return y;
}

// ---- autograd ----

// The backward node: saved input, weight, bias (undefined without one) and the block the
// activation's derivative is taken from (the output, or the pre-activation z); attributes act, slope.
struct LinearActBackward {
  static constexpr const char* kName = "LinearActBackward";

  static variable_list backward(const variable_list& grads, const variable_list& saved, const NodeAttrs& attrs,
                                const std::vector<bool>& needs) {
    static auto bwd = c10::Dispatcher::singleton()
                          .findSchemaOrThrow("fastnn::linear_act_backward", "")
                          .typed<std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                                    const Tensor&, bool, c10::string_view, double,
                                                                    std::array<bool, 2>)>();
    const Tensor &input = saved[0], &weight = saved[1], &bias = saved[2], &s = saved[3];
    const Act act = Act(attrs[0].toInt());
    const double slope = attrs[1].toDouble();
    const bool has_bias = bias.defined();
    const Tensor& g = grads[0];
    if (!g.defined()) return {Tensor(), Tensor(), Tensor()};
    Tensor gi, gw, gb;
    if (torch::autograd::GradMode::is_enabled()) {
      // create_graph=True: recompute z with differentiable ops (so second derivatives through z are
      // right) and take the activation's derivative from torch's own op.
      Tensor z = at::linear(input, weight, has_bias ? c10::optional<Tensor>(bias) : c10::nullopt);
      Tensor gz = act == Act::Identity
                      ? g
                      : torch::autograd::grad({act_value_aten(act, z, slope)}, {z}, {g}, /*retain_graph=*/true,
                                              /*create_graph=*/true)[0];
      const int64_t K = weight.size(1), N = weight.size(0);
      const int64_t M = linear_rows(input);
      Tensor gz2 = gz.reshape({M, N});
      gi = needs[0] ? gz.matmul(weight) : Tensor();
      gw = needs[1] ? gz2.t().mm(input.reshape({M, K})) : Tensor();
      gb = has_bias && needs[2] ? gz2.sum(0) : Tensor();
    } else {
      std::array<bool, 2> mask{needs[0], needs[1]};
      // Nothing to record, so past the Autograd key: its fallback for an op without an autograd
      // kernel is boxed (the arguments packed into IValues, strings copied) on every call.
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      std::tie(gi, gw, gb) = bwd.call(g, input, weight, s, has_bias, activation_names()[int(act)], slope, mask);
      if (!mask[0]) gi = Tensor();
      if (!mask[1]) gw = Tensor();
      if (!has_bias || !needs[2]) gb = Tensor();
    }
    return {gi, gw, gb};
  }
};

Tensor linear_act_autograd(const Tensor& input, const Tensor& weight, const c10::optional<Tensor>& bias,
                           c10::string_view activation, double slope) {
  using namespace torch::autograd;
  refuse_forward_ad(kLinearActOp, isFwGradDefined(input) || isFwGradDefined(weight) || isFwGradDefined(bias));
  if (!compute_requires_grad(input, weight, bias)) {
    // Nothing to record (inference, no_grad): the backend's output-only kernel, without a node and
    // saved tensors (with the path memo: a 4x16x16 layer 7.2 -> 5.0 us, Zen 4).
    at::AutoDispatchBelowADInplaceOrView guard;
    return linear_act_op().call(input, weight, bias, activation, slope);
  }
  refuse_functorch_levels(kLinearActOp);
  static auto fwd = c10::Dispatcher::singleton()
                        .findSchemaOrThrow("fastnn::linear_act_forward", "")
                        .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const c10::optional<Tensor>&,
                                                          c10::string_view, double)>();
  Tensor y, z;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    std::tie(y, z) = fwd.call(input, weight, bias, activation, slope);
  }
  const Act act = parse_activation(kLinearActOp, activation);
  const Tensor b = bias.has_value() && bias->defined() ? *bias : Tensor();
  auto node = FusedBackwardNode<LinearActBackward>::make({input, weight, b}, {int64_t(act), slope});
  set_history(y, node);
  node->save(input);
  node->save(weight);
  node->save(b);
  const bool from_output = act_saves_output(act, slope);
  node->save(from_output ? y : z, /*is_output=*/from_output);
  return y;
}

// Under torch.autocast the op runs in the autocast dtype, as nn.Linear does.
template <c10::DeviceType D, c10::DispatchKey K>
Tensor linear_act_autocast(const Tensor& input, const Tensor& weight, const c10::optional<Tensor>& bias,
                           c10::string_view activation, double slope) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(K);
  const auto& op = linear_act_op();
  const auto dt = at::autocast::get_autocast_dtype(D);
  auto cast = [&](const Tensor& t) { return at::autocast::cached_cast(dt, t, D); };
  c10::optional<Tensor> b = bias.has_value() && bias->defined() ? c10::optional<Tensor>(cast(*bias)) : c10::nullopt;
  return op.call(cast(input), cast(weight), b, activation, slope);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastnn, AutocastCPU, m) {
  m.impl("linear_act", &linear_act_autocast<c10::DeviceType::CPU, c10::DispatchKey::AutocastCPU>);
}

TORCH_LIBRARY_IMPL(fastnn, AutocastCUDA, m) {
  m.impl("linear_act", &linear_act_autocast<c10::DeviceType::CUDA, c10::DispatchKey::AutocastCUDA>);
}

TORCH_LIBRARY_IMPL(fastnn, CPU, m) {
  m.impl("linear_act", &linear_act_output_only_cpu);
  m.impl("linear_act_forward", &linear_act_forward_cpu);
  m.impl("linear_act_backward", &linear_act_backward_cpu);
  m.impl("activation", &activation_cpu);
}

TORCH_LIBRARY_IMPL(fastnn, Autograd, m) {
  m.impl("linear_act", &linear_act_autograd);
}

}  // namespace fastnn
