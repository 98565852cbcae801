// fastnn::mlp: a chain of Linear+activation layers as one op and one autograd node.
//
// CPU, every width <= kTiledMaxWidth: the cache-blocked kernels of mlp_cpu_kernels.h (a tile of
// rows goes through all layers while it is in cache). Otherwise, and on CUDA, every layer runs
// through the backend's linear_act kernels (BLAS/cuBLAS + fused passes). Either way one dispatch
// each way and one autograd node for the whole chain, instead of a module call, an op dispatch and
// an autograd node per layer. Each layer keeps one activation-sized tensor for
// backward: its output where the derivative can be taken from it (as linear_act decides), else its
// pre-activation, from which backward recomputes the output the next layer read.
#include <ATen/autocast_mode.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include "../common/autograd_node.h"
#include "../common/path_choice.h"
#include "../cpu_isa/cpu_isa.h"
#include "mlp_common.h"

namespace fastnn {

using at::Tensor;
using torch::autograd::variable_list;

namespace {

const auto& layer_forward_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastnn::linear_act_forward", "")
                       .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const c10::optional<Tensor>&,
                                                         c10::string_view, double)>();
  return op;
}

const auto& layer_backward_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastnn::linear_act_backward", "")
                       .typed<std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                                 const Tensor&, bool, c10::string_view, double,
                                                                 std::array<bool, 2>)>();
  return op;
}

const auto& activation_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastnn::activation", "")
                       .typed<Tensor(const Tensor&, c10::string_view, double)>();
  return op;
}

}  // namespace

Tensor mlp_activation(const Tensor& z, c10::string_view activation, double slope) {
  return activation_op().call(z, activation, slope);
}

// The saved arena: layer after layer, the [M, N_l] block that layer l's backward reads (its output
// or its pre-activation); the last layer has no block when it reads its output.
int64_t arena_size(const std::vector<MlpLayer>& layers, at::TensorList weights, int64_t M) {
  int64_t total = 0;
  for (size_t l = 0; l < layers.size(); ++l)
    if (!(l + 1 == layers.size() && layers[l].saves_output)) total += M * weights[l].size(0);
  return total;
}

// Per layer, the element offset of its saved block in the arena, or -1 where it is the output (a
// last layer that saves its output); with the checks every reader of a saved arena makes (it comes
// back from autograd's saved variables or from a caller of mlp_backward).
static std::vector<int64_t> arena_offsets(const Tensor& arena, const Tensor& output, const std::vector<MlpLayer>& layers,
                                          const Tensor& input, at::TensorList weights) {
  const int64_t M = linear_rows(input);
  TORCH_CHECK(arena.numel() == arena_size(layers, weights, M) && arena.scalar_type() == input.scalar_type() &&
                  arena.is_contiguous(),
              kMlpOp, ": backward got a saved arena of the wrong size, dtype or layout");
  std::vector<int64_t> offs(layers.size());
  int64_t off = 0;
  for (size_t l = 0; l < layers.size(); ++l) {
    const int64_t N = weights[l].size(0);
    if (l + 1 == layers.size() && layers[l].saves_output) {
      TORCH_CHECK(output.numel() == M * N && output.scalar_type() == input.scalar_type(), kMlpOp,
                  ": backward got an output of the wrong size or dtype");
      offs[l] = -1;
    } else {
      offs[l] = off;
      off += M * N;
    }
  }
  return offs;
}

// Per layer, the address of its saved block (a non-contiguous output is copied into keep). Pointer
// arithmetic, not views: a view costs a dispatch each, and at the batch sizes this op is for, those
// add up to more than the arithmetic.
std::vector<void*> arena_pointers(const Tensor& arena, const Tensor& output, const std::vector<MlpLayer>& layers,
                                  const Tensor& input, at::TensorList weights, Tensor& keep) {
  const auto offs = arena_offsets(arena, output, layers, input, weights);
  std::vector<void*> ptrs(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    if (offs[l] < 0) {
      keep = output.is_contiguous() ? output : output.contiguous();
      ptrs[l] = keep.data_ptr();
    } else {
      ptrs[l] = static_cast<char*>(arena.data_ptr()) + offs[l] * arena.element_size();
    }
  }
  return ptrs;
}

// Per layer, its saved block as a (..., N_l) view of the arena (or the output).
std::vector<Tensor> arena_views(const Tensor& arena, const Tensor& output, const std::vector<MlpLayer>& layers,
                                const Tensor& input, at::TensorList weights) {
  const int64_t M = linear_rows(input);
  const auto offs = arena_offsets(arena, output, layers, input, weights);
  std::vector<Tensor> views(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    const int64_t N = weights[l].size(0);
    views[l] = offs[l] < 0 ? output.reshape(linear_out_shape(input, N))
                           : arena.narrow(0, offs[l], M * N).view(linear_out_shape(input, N));
  }
  return views;
}

// Layer by layer through the backend's linear_act_forward; each saved block is copied into the
// arena as soon as the layer is done (its own tensor is freed after the next layer), so the arena
// plus two layers' activations is the most held at once.
std::tuple<Tensor, Tensor> forward_layers(const std::vector<MlpLayer>& layers, const Tensor& input,
                                          at::TensorList weights, const Biases& biases,
                                          const std::vector<std::string>& activations, at::ArrayRef<double> slopes) {
  const size_t L = layers.size();
  const int64_t M = linear_rows(input);
  Tensor arena = at::empty({arena_size(layers, weights, M)}, input.options());
  int64_t off = 0;
  Tensor x = input;
  for (size_t l = 0; l < L; ++l) {
    auto [y, z] = layer_forward_op().call(x, weights[l], biases.get(l), activations[l], slopes[l]);
    if (l + 1 == L && layers[l].saves_output) return {y, arena};
    const int64_t N = weights[l].size(0);
    Tensor block = arena.narrow(0, off, M * N).view(y.sizes());
    off += M * N;
    block.copy_(layers[l].saves_output ? y : z);
    // The next layer reads y itself, not its copy: a BLAS GEMM's bits can depend on its operands'
    // alignment (torch's addmm does), and the output-only chain reads y.
    x = y;
  }
  return {x, arena};
}

// The same chain with nothing recorded: each layer through the backend's output-only linear_act
// (no pre-activation kept, no arena); the same bits as forward_layers' output.
Tensor forward_layers_output_only(const Tensor& input, at::TensorList weights, const Biases& biases,
                                  const std::vector<std::string>& activations, at::ArrayRef<double> slopes) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  Tensor x = input;
  for (size_t l = 0; l < weights.size(); ++l)
    x = linear_act_op().call(x, weights[l], biases.get(l), activations[l], slopes[l]);
  return x;
}

Grads backward_layers(const std::vector<MlpLayer>& layers, const Tensor& grad_output, const Tensor& input,
                      at::TensorList weights, const Tensor& arena, const Tensor& output,
                      const std::vector<std::string>& activations, at::ArrayRef<double> slopes, bool input_grad) {
  const size_t L = layers.size();
  const auto saved = arena_views(arena, output, layers, input, weights);
  std::vector<Tensor> gw(L), gb(L);
  Tensor g = grad_output;
  for (size_t i = L; i-- > 0;) {
    Tensor x = input;
    if (i > 0)
      x = layers[i - 1].saves_output ? saved[i - 1]
                                     : activation_op().call(saved[i - 1], activations[i - 1], slopes[i - 1]);
    const bool need_gi = i > 0 || input_grad;
    auto [gi, w, b] = layer_backward_op().call(g, x, weights[i], saved[i], layers[i].has_bias, activations[i],
                                               slopes[i], {need_gi, true});
    gw[i] = w;
    gb[i] = b;
    g = gi;
  }
  return {input_grad ? g : at::empty({0}, input.options()), gw, gb};
}

// ---- CPU: the cache-blocked chain (mlp_cpu_kernels.h) ----

namespace {

// What both CPU directions start from: the checked layers, the input as a contiguous matrix, and the
// kernels' view of each layer (its contiguous weight and bias, and its saved block). Raw pointers
// throughout: no views or reshapes, each of which would be a dispatch.
struct CpuChain {
  std::vector<MlpLayer> layers;
  int64_t M, K0, NL;
  DType dt;
  Tensor x;
  std::vector<Tensor> keep;  // contiguous copies the pointers below refer to
  std::vector<MlpCpuLayer> ly;

  CpuChain(std::vector<MlpLayer> checked, const Tensor& input, at::TensorList weights, const Biases& biases)
      : layers(std::move(checked)), M(linear_rows(input)), K0(weights[0].size(1)),
        NL(weights[weights.size() - 1].size(0)), dt(cpu_dtype(input, kMlpOp)),
        x(input.is_contiguous() ? input : input.contiguous()) {
    ly.reserve(layers.size());
    for (size_t l = 0; l < layers.size(); ++l) {
      const void* b = layers[l].has_bias ? contiguous_data(*biases.get(l)) : nullptr;
      ly.push_back({contiguous_data(weights[l]), b, weights[l].size(1), weights[l].size(0), int(layers[l].act),
                    layers[l].slope, layers[l].saves_output, nullptr});
    }
  }

  // The data of t, or of a contiguous copy of it kept alive here.
  const void* contiguous_data(const Tensor& t) {
    if (t.is_contiguous()) return t.data_ptr();
    return keep.emplace_back(t.contiguous()).data_ptr();
  }

  void point_at(const std::vector<void*>& saved) {
    for (size_t l = 0; l < ly.size(); ++l) ly[l].saved = saved[l];
  }
};

// The chain through the tiled kernels: the output and the saved arena (the layers are checked);
// output_only: no arena (it comes back empty), nothing saved.
std::tuple<Tensor, Tensor> forward_tiled(std::vector<MlpLayer> layers, const Tensor& input, at::TensorList weights,
                                         const Biases& biases, bool output_only = false) {
  CpuChain c(std::move(layers), input, weights, biases);
  const auto opts = input.options();
  Tensor arena = at::empty({output_only ? 0 : arena_size(c.layers, weights, c.M)}, opts);
  Tensor out = at::empty(linear_out_shape(input, c.NL), opts);
  Tensor kept_out;
  if (!output_only) c.point_at(arena_pointers(arena, out, c.layers, input, weights, kept_out));
  if (c.M > 0) mlp_cpu_kernels().forward(c.dt, c.x.data_ptr(), out.data_ptr(), c.ly.data(), int(c.ly.size()), c.M);
  return {out, arena};
}

Grads backward_tiled(std::vector<MlpLayer> layers, const Tensor& grad_output, const Tensor& input,
                     at::TensorList weights, const Biases& biases, const Tensor& arena, const Tensor& output,
                     bool input_grad) {
  CpuChain c(std::move(layers), input, weights, biases);
  const size_t L = c.ly.size();
  TORCH_CHECK(grad_output.numel() == c.M * c.NL && grad_output.scalar_type() == input.scalar_type(), kMlpOp,
              ": backward got a grad_output of the wrong size or dtype");
  const Tensor g = grad_output.is_contiguous() ? grad_output : grad_output.contiguous();
  Tensor kept_out;
  c.point_at(arena_pointers(arena, output, c.layers, input, weights, kept_out));
  const auto opts = input.options();
  std::vector<Tensor> gw(L), gb(L);
  std::vector<void*> gwp(L), gbp(L);
  for (size_t l = 0; l < L; ++l) {
    gw[l] = at::empty({weights[l].size(0), weights[l].size(1)}, opts);
    gb[l] = at::empty({c.layers[l].has_bias ? weights[l].size(0) : 0}, opts);
    gwp[l] = gw[l].data_ptr();
    gbp[l] = c.layers[l].has_bias ? gb[l].data_ptr() : nullptr;
  }
  Tensor gi = input_grad ? at::empty(input.sizes(), opts) : at::empty({0}, opts);
  mlp_cpu_kernels().backward(c.dt, g.data_ptr(), c.x.data_ptr(), c.ly.data(), int(L), c.M,
                             input_grad ? gi.data_ptr() : nullptr, gwp.data(), gbp.data());
  return {gi, gw, gb};
}

enum { kTiled = 0, kLayers = 1 };

// The output of a forward with nothing recorded, on the given path.
Tensor forward_output_only(int path, std::vector<MlpLayer> layers, const Tensor& input, at::TensorList weights,
                           const Biases& biases, const std::vector<std::string>& activations,
                           at::ArrayRef<double> slopes) {
  if (path == kLayers) return forward_layers_output_only(input, weights, biases, activations, slopes);
  return std::get<0>(forward_tiled(std::move(layers), input, weights, biases, /*output_only=*/true));
}

}  // namespace

std::string mlp_shape_class(at::TensorList weights, const std::vector<MlpLayer>& layers) {
  std::string s = std::to_string(weights[0].size(1));
  for (size_t l = 0; l < layers.size(); ++l)
    s += "-" + std::to_string(weights[l].size(0)) + ":" + activation_names()[int(layers[l].act)] +
         (layers[l].saves_output ? "" : "/z") + (layers[l].has_bias ? "+b" : "");
  return s;
}

MlpCalibration mlp_calibration(const Tensor& input, at::TensorList weights, const std::vector<MlpLayer>& layers,
                               int64_t rows) {
  MlpCalibration d;
  at::Generator gen = path_generator();
  const auto cpu = input.options().device(at::kCPU);
  d.x = at::randn({rows, weights[0].size(1)}, gen, cpu).to(input.device());
  d.g = at::randn({rows, weights.back().size(0)}, gen, cpu).to(input.device());
  for (const MlpLayer& ly : layers) {
    d.names.push_back(activation_names()[int(ly.act)]);
    d.slopes.push_back(ly.slope);
  }
  return d;
}

namespace {

// kTiled or kLayers for a CPU chain (checked layers): measured once per shape class on this machine
// (csrc/common/path_choice.h), the fixed rule for empty batches and in deterministic mode. why, when
// given, receives the reason. output_only: the choice for calls with nothing recorded, measured on the
// forward alone (the tiled forward saves more against the layers' than the whole step does).
int mlp_cpu_path(const Tensor& input, at::TensorList weights, const Biases& biases,
                 const std::vector<MlpLayer>& layers, std::string* why = nullptr, bool output_only = false) {
  int64_t width = weights[0].size(1), elems = 0;
  for (const Tensor& w : weights) {
    width = std::max(width, w.size(0));
    elems += w.numel();
  }
  const int64_t bytes = elems * (input.scalar_type() == at::kDouble ? 8 : 4);  // in the compute type
  if (width > kMlpTiledCandidateMaxWidth || bytes > kMlpTiledCandidateMaxWeightBytes) {
    if (why)
      *why = "a width exceeds " + std::to_string(kMlpTiledCandidateMaxWidth) + " or the weights exceed " +
             std::to_string(kMlpTiledCandidateMaxWeightBytes >> 20) +
             " MiB: the tiled kernels would re-read weights that no longer stay in cache";
    return kLayers;
  }
  const bool narrow = width <= kMlpTiledMaxWidth;
  PathQuery q;
  q.op = kMlpOp;
  q.paths = {"tiled", "layers"};
  q.fixed_path = narrow ? kTiled : kLayers;
  q.fixed_reason = narrow ? "every width is at most 256" : "a width exceeds 256";
  static_assert(kMlpTiledMaxWidth == 256, "the fixed rule's reason names the width");
  q.dtype = c10::toString(input.scalar_type());
  q.batch = linear_rows(input);
  q.shape = mlp_shape_class(weights, layers) + (output_only ? " fwd" : "");
  // Both directions on calibration data (made at the first run, not on cached look-ups), each path
  // exactly as the op runs it; no input gradient: a network's input rarely needs one.
  MlpCalibration d;  // made at the first run
  if (output_only) q.work = "fwd";
  q.run = [&](int p, int64_t rows) {
    if (!d.x.defined()) d = mlp_calibration(input, weights, layers, rows);
    if (output_only) {
      forward_output_only(p, layers, d.x, weights, biases, d.names, d.slopes);
    } else if (p == kTiled) {
      auto [y, arena] = forward_tiled(layers, d.x, weights, biases);
      backward_tiled(layers, d.g, d.x, weights, biases, arena, y, false);
    } else {
      auto [y, arena] = forward_layers(layers, d.x, weights, biases, d.names, d.slopes);
      backward_layers(layers, d.g, d.x, weights, arena, y, d.names, d.slopes, false);
    }
  };
  return choose_path(q, why);
}

std::tuple<Tensor, Tensor> mlp_forward_cpu(const Tensor& input, at::TensorList weights, const Biases& biases,
                                           const std::vector<std::string>& activations,
                                           at::ArrayRef<double> slopes) {
  auto layers = check_mlp_args(input, weights, biases, activations, slopes);
  if (mlp_cpu_path(input, weights, biases, layers) == kLayers)
    return forward_layers(layers, input, weights, biases, activations, slopes);
  return forward_tiled(std::move(layers), input, weights, biases);
}

// Nothing recorded (inference, no_grad): the same path and output bits, nothing saved.
Tensor mlp_output_only_cpu(const Tensor& input, at::TensorList weights, const Biases& biases,
                           const std::vector<std::string>& activations, at::ArrayRef<double> slopes) {
  auto layers = check_mlp_args(input, weights, biases, activations, slopes);
  const int path = mlp_cpu_path(input, weights, biases, layers, nullptr, /*output_only=*/true);
  return forward_output_only(path, std::move(layers), input, weights, biases, activations, slopes);
}

Grads mlp_backward_cpu(const Tensor& grad_output, const Tensor& input, at::TensorList weights, const Biases& biases,
                       const Tensor& arena, const Tensor& output, const std::vector<std::string>& activations,
                       at::ArrayRef<double> slopes, bool input_grad) {
  auto layers = check_mlp_args(input, weights, biases, activations, slopes);
  if (mlp_cpu_path(input, weights, biases, layers) == kLayers)
    return backward_layers(layers, grad_output, input, weights, arena, output, activations, slopes, input_grad);
  return backward_tiled(std::move(layers), grad_output, input, weights, biases, arena, output, input_grad);
}

// ---- autograd: one node for the whole chain ----

// The backward node: saved input, the weights, each layer's bias (undefined without one), the arena
// and the output (undefined unless the last layer's derivative is taken from it); attributes: the
// activation codes and slopes. Gradients in edge order: input, the weights, the defined biases.
struct MlpBackward {
  static constexpr const char* kName = "MlpBackward";

  static variable_list backward(const variable_list& grads, const variable_list& sv, const NodeAttrs& attrs,
                                const std::vector<bool>& needs) {
    static auto bwd = c10::Dispatcher::singleton()
                          .findSchemaOrThrow("fastnn::mlp_backward", "")
                          .typed<std::tuple<Tensor, std::vector<Tensor>, std::vector<Tensor>>(
                              const Tensor&, const Tensor&, at::TensorList, const Biases&, const Tensor&,
                              const Tensor&, const std::vector<std::string>&, at::ArrayRef<double>, bool)>();
    const auto acts = attrs[0].toIntVector();
    const auto slopes = attrs[1].toDoubleVector();
    const size_t L = acts.size();
    const Tensor& input = sv[0];
    const std::vector<Tensor> weights(sv.begin() + 1, sv.begin() + 1 + L);
    const std::vector<Tensor> bias_or_none(sv.begin() + 1 + L, sv.begin() + 1 + 2 * L);
    const Tensor& arena = sv[1 + 2 * L];
    const Tensor output = sv[2 + 2 * L].defined() ? sv[2 + 2 * L] : at::empty({0}, input.options());
    std::vector<std::string> names(L);
    for (size_t l = 0; l < L; ++l) names[l] = activation_names()[acts[l]];
    // Gradient slots: input, the weights, the defined biases.
    std::vector<size_t> bias_slot(L, 0);
    size_t slots = 1 + L;
    for (size_t l = 0; l < L; ++l)
      if (bias_or_none[l].defined()) bias_slot[l] = slots++;
    variable_list out(slots);
    const Tensor& g = grads[0];
    if (!g.defined()) return out;

    if (torch::autograd::GradMode::is_enabled()) {
      // create_graph=True: recompute the chain with torch's differentiable ops and differentiate
      // that, so second derivatives are torch's own.
      Tensor x = input;
      for (size_t l = 0; l < L; ++l) {
        const c10::optional<Tensor> b = bias_or_none[l].defined() ? c10::optional<Tensor>(bias_or_none[l]) : c10::nullopt;
        x = act_value_aten(Act(acts[l]), at::linear(x, weights[l], b), slopes[l]);
      }
      std::vector<Tensor> wrt;
      std::vector<size_t> where;
      auto want = [&](const Tensor& t, size_t slot) {
        if (needs[slot]) {
          wrt.push_back(t);
          where.push_back(slot);
        }
      };
      want(input, 0);
      for (size_t l = 0; l < L; ++l) want(weights[l], 1 + l);
      for (size_t l = 0; l < L; ++l)
        if (bias_or_none[l].defined()) want(bias_or_none[l], bias_slot[l]);
      if (wrt.empty()) return out;
      auto gs = torch::autograd::grad({x}, wrt, {g}, /*retain_graph=*/true, /*create_graph=*/true,
                                      /*allow_unused=*/true);
      for (size_t i = 0; i < wrt.size(); ++i) out[where[i]] = gs[i];
      return out;
    }

    Biases biases;
    for (size_t l = 0; l < L; ++l)
      biases.push_back(bias_or_none[l].defined() ? c10::optional<Tensor>(bias_or_none[l]) : c10::nullopt);
    // Past the Autograd key, as linear_act's backward: its fallback would box every argument.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [gi, gw, gb] = bwd.call(g, input, weights, biases, arena, output, names, slopes, needs[0]);
    if (needs[0]) out[0] = gi;
    for (size_t l = 0; l < L; ++l) {
      if (needs[1 + l]) out[1 + l] = gw[l];
      if (bias_or_none[l].defined() && needs[bias_slot[l]]) out[bias_slot[l]] = gb[l];
    }
    return out;
  }
};

Tensor mlp_autograd(const Tensor& input, at::TensorList weights, const Biases& biases,
                    const std::vector<std::string>& activations, at::ArrayRef<double> slopes) {
  std::vector<Tensor> defined;
  for (size_t l = 0; l < biases.size(); ++l)
    if (defined_at(biases, l)) defined.push_back(*biases.get(l));
  using namespace torch::autograd;
  refuse_forward_ad(kMlpOp, isFwGradDefined(input) || isFwGradDefinedTensorList(weights) ||
                                isFwGradDefinedTensorList(biases));
  if (!compute_requires_grad(input, weights, at::TensorList(defined))) {
    // As linear_act_autograd: with nothing to record, no node.
    at::AutoDispatchBelowADInplaceOrView guard;
    return mlp_op().call(input, weights, biases, activations, slopes);
  }
  refuse_functorch_levels(kMlpOp);
  static auto fwd = c10::Dispatcher::singleton()
                        .findSchemaOrThrow("fastnn::mlp_forward", "")
                        .typed<std::tuple<Tensor, Tensor>(const Tensor&, at::TensorList, const Biases&,
                                                          const std::vector<std::string>&, at::ArrayRef<double>)>();
  const auto layers = check_mlp_args(input, weights, biases, activations, slopes);
  const size_t L = layers.size();
  Tensor y, arena;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    std::tie(y, arena) = fwd.call(input, weights, biases, activations, slopes);
  }
  variable_list edges{input};
  edges.insert(edges.end(), weights.begin(), weights.end());
  edges.insert(edges.end(), defined.begin(), defined.end());
  std::vector<int64_t> acts(L);
  for (size_t l = 0; l < L; ++l) acts[l] = int64_t(layers[l].act);
  auto node = FusedBackwardNode<MlpBackward>::make(edges, {acts, slopes.vec()});
  set_history(y, node);
  node->save(input);
  for (const auto& w : weights) node->save(w);
  for (size_t l = 0; l < L; ++l) node->save(layers[l].has_bias ? *biases.get(l) : Tensor());
  node->save(arena);
  const bool saves_output = layers.back().saves_output;
  node->save(saves_output ? y : Tensor(), /*is_output=*/saves_output);
  return y;
}

// Under torch.autocast the chain runs in the autocast dtype, as a stack of nn.Linear does.
template <c10::DeviceType D, c10::DispatchKey K>
Tensor mlp_autocast(const Tensor& input, at::TensorList weights, const Biases& biases,
                    const std::vector<std::string>& activations, at::ArrayRef<double> slopes) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(K);
  const auto& op = mlp_op();
  const auto dt = at::autocast::get_autocast_dtype(D);
  auto cast = [&](const Tensor& t) { return at::autocast::cached_cast(dt, t, D); };
  std::vector<Tensor> w;
  for (const Tensor& t : weights) w.push_back(cast(t));
  Biases b;
  for (size_t l = 0; l < biases.size(); ++l)
    b.push_back(defined_at(biases, l) ? c10::optional<Tensor>(cast(*biases.get(l))) : c10::nullopt);
  return op.call(cast(input), w, b, activations, slopes);
}

}  // namespace

MlpCudaPath g_mlp_cuda_path = nullptr;

const c10::TypedOperatorHandle<MlpSignature>& mlp_op() {
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("fastnn::mlp", "").typed<MlpSignature>();
  return op;
}

Tensor mlp_eager(const Tensor& input, const std::vector<Tensor>& weights,
                 const std::vector<c10::optional<Tensor>>& biases, const std::vector<std::string>& activations,
                 const std::vector<double>& slopes) {
  Biases b;
  b.reserve(biases.size());
  for (const auto& t : biases) b.push_back(t);
  return mlp_op().call(input, weights, b, activations, slopes);
}

std::tuple<std::string, std::string> mlp_path(const Tensor& input, at::TensorList weights, const Biases& biases,
                                              const std::vector<std::string>& activations, at::ArrayRef<double> slopes,
                                              bool training) {
  TORCH_CHECK_VALUE(!weights.empty(), kMlpOp, ": needs at least one layer (weights is empty)");
  if (!input.device().is_cpu() && !input.is_cuda())
    return {"layers", "no fused kernels for device " + input.device().str()};
  if (input.is_cuda() && !g_mlp_cuda_path) return {"layers", "fastnn was built without CUDA kernels"};
  // Under autocast the caller passes the input in the autocast dtype; the weights follow it.
  std::vector<Tensor> w;
  for (const Tensor& t : weights) w.push_back(t.scalar_type() == input.scalar_type() ? t : t.to(input.scalar_type()));
  Biases b;
  for (size_t l = 0; l < biases.size(); ++l)
    b.push_back(defined_at(biases, l) && biases.get(l)->scalar_type() != input.scalar_type()
                    ? c10::optional<Tensor>(biases.get(l)->to(input.scalar_type()))
                    : biases.get(l));
  const auto layers = check_mlp_args(input, w, b, activations, slopes);
  if (input.is_cuda()) return g_mlp_cuda_path(input, w, b, layers);
  std::string why;
  const int path = mlp_cpu_path(input, w, b, layers, &why, !training);
  return {path == kTiled ? "tiled" : "layers", why};
}

TORCH_LIBRARY_IMPL(fastnn, CPU, m) {
  m.impl("mlp", &mlp_output_only_cpu);
  m.impl("mlp_forward", &mlp_forward_cpu);
  m.impl("mlp_backward", &mlp_backward_cpu);
}

TORCH_LIBRARY_IMPL(fastnn, Autograd, m) {
  m.impl("mlp", &mlp_autograd);
}

TORCH_LIBRARY_IMPL(fastnn, AutocastCPU, m) {
  m.impl("mlp", &mlp_autocast<c10::DeviceType::CPU, c10::DispatchKey::AutocastCPU>);
}

TORCH_LIBRARY_IMPL(fastnn, AutocastCUDA, m) {
  m.impl("mlp", &mlp_autocast<c10::DeviceType::CUDA, c10::DispatchKey::AutocastCUDA>);
}

}  // namespace fastnn
