// The backward node of a fused op (linear_act, mlp): the saved tensors, a few plain attributes and a
// function from the output gradient to one gradient per forward tensor input.
//
// Why not torch::autograd::Function: its node (CppNode) keeps an AutogradContext (a string-keyed
// map for attributes, VariableInfo per input and output, a mutex) and its apply wraps outputs
// generically. With it a 4x16x16 relu layer's forward + sum().backward() took 83 us against torch's
// 70; with this node, 61 against 66 (Zen 4, benchmarks/RESULTS.md, "The backward node"). This node
// keeps only what backward reads. It supports what CppNode does: saved-tensor hooks and the in-place
// modification check (both from SavedVariable), retain_graph, anomaly mode, and compiled autograd
// (compiled_args / apply_with_saved, the node's backward bound as one opaque function, as CppNode
// binds its own).
#pragma once

#include <ATen/FuncTorchTLS.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/dynamo/compiled_autograd.h>

#include <memory>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <vector>

namespace fastnn {

// Plain attributes of a node: integers and doubles (activation codes, slopes), kept as IValues so
// compiled autograd can hash them into its cache key and pass them to the bound function.
using NodeAttrs = std::vector<c10::IValue>;

// Op must provide:
//   static constexpr const char* kName;  // the node's name (grad_fn.name(), profiles)
//   static variable_list backward(const variable_list& grads, const variable_list& saved,
//                                 const NodeAttrs& attrs, const std::vector<bool>& needs_input_grad);
// returning one gradient (or an undefined tensor) per forward tensor input, in edge order.
template <class Op>
struct FusedBackwardNode final : torch::autograd::Node {
  using variable_list = torch::autograd::variable_list;

  std::vector<torch::autograd::SavedVariable> saved;
  std::vector<bool> saved_is_output;
  NodeAttrs attrs;

  // A node for outputs computed from inputs (any of which may be undefined or not need a gradient).
  // Save an output (save(t, true)) only after it has its history (set_history): a saved output
  // keeps no reference to its node (no cycle); unpack gives it back.
  static auto make(const variable_list& inputs, NodeAttrs attrs) {
    auto node = new_node();
    node->set_next_edges(torch::autograd::collect_next_edges(inputs));
    node->attrs = std::move(attrs);
    return node;
  }
  void save(const at::Tensor& t, bool is_output = false) {
    saved.emplace_back(t, is_output);
    saved_is_output.push_back(is_output);
  }

  std::string name() const override { return Op::kName; }

  variable_list apply(variable_list&& grads) override {
    return Op::backward(grads, unpack_saved(), attrs, needs_input_grad());
  }

  void release_variables() override {
    for (auto& s : saved) s.reset_data();
  }

  // ---- compiled autograd: the same protocol as CppNode ----
  void compiled_args(torch::dynamo::autograd::CompiledNodeArgs& args) const override {
    args.collect(static_cast<uint64_t>(typeid(Op).hash_code()));
    args.collect(std::string(Op::kName));
    for (size_t i = 0; i < saved.size(); ++i) args.collect(saved[i], bool(saved_is_output[i]));
    // Attributes select kernels: specialize the compiled graph on them rather than lift them.
    args.collect(attrs.size());
    for (const auto& a : attrs) {
      if (a.isInt()) args.collect(a.toInt());
      else if (a.isDouble()) args.collect(a.toDouble());
      else if (a.isIntList()) args.collect(a.toIntVector());
      else if (a.isDoubleList()) args.collect(a.toDoubleVector());
      else TORCH_INTERNAL_ASSERT(false, Op::kName, ": attribute of an unexpected type");
    }
  }

  variable_list apply_with_saved(const variable_list& grads,
                                 torch::dynamo::autograd::SwapSavedVariables& swap) override {
    for (auto& s : saved) swap.before(s);
    using torch::dynamo::autograd::IValuePacker;
    // [saved tensors, attribute..., needs_input_grad]
    std::vector<c10::IValue> args{IValuePacker<variable_list>::pack(unpack_saved())};
    args.insert(args.end(), attrs.begin(), attrs.end());
    args.push_back(IValuePacker<std::vector<bool>>::pack(needs_input_grad()));
    std::vector<at::TypePtr> schema;
    for (const auto& v : args) schema.push_back(v.isTensor() ? at::TensorType::get() : v.type());
    const auto output_metadata =
        torch::dynamo::autograd::IValuePacker<std::vector<std::optional<torch::autograd::InputMetadata>>>::pack(
            torch::dynamo::autograd::get_input_metadata(next_edges()));
    const auto& py = torch::dynamo::autograd::getPyCompilerInterface();
    // Bound per call (as CppNode does): the schema may differ between cache misses. Not traceable:
    // the compiled graph calls it as it is.
    const auto fn_name = py->bind_function(swap.get_py_compiler(), Op::kName, &apply_functional, schema,
                                           /*is_custom_function=*/true, /*is_traceable=*/false);
    auto results = py->call_function(swap.get_py_compiler(), "apply_functional", fn_name, grads, args,
                                      output_metadata);
    for (auto& s : saved) swap.after(s);
    return results;
  }

 private:
  variable_list unpack_saved() {
    variable_list out;
    out.reserve(saved.size());
    for (size_t i = 0; i < saved.size(); ++i) out.push_back(saved[i].unpack(saved_is_output[i] ? getptr() : nullptr));
    return out;
  }
  std::vector<bool> needs_input_grad() const {
    std::vector<bool> needs(num_outputs());
    for (size_t i = 0; i < needs.size(); ++i) needs[i] = task_should_compute_output(i);
    return needs;
  }

  // torch >= 2.13 holds nodes by intrusive_ptr; earlier versions by shared_ptr with deleteNode (which
  // frees long graphs without deep recursion), found here by argument-dependent lookup.
  static auto new_node() {
    if constexpr (std::is_base_of_v<c10::intrusive_ptr_target, torch::autograd::Node>) {
      return c10::make_intrusive<FusedBackwardNode>();
    } else {
      return std::shared_ptr<FusedBackwardNode>(new FusedBackwardNode(), [](FusedBackwardNode* n) { deleteNode(n); });
    }
  }

  static variable_list apply_functional(const variable_list& grads, const std::vector<c10::IValue>& args) {
    using torch::dynamo::autograd::IValuePacker;
    const auto unpacked = IValuePacker<variable_list>::unpack(args.front());
    const NodeAttrs attrs(args.begin() + 1, args.end() - 1);
    const auto needs = IValuePacker<std::vector<bool>>::unpack(args.back());
    return Op::backward(grads, unpacked, attrs, needs);
  }
};

// Refuses forward-mode AD (no jvp) with the op's name, as torch::autograd::Function did.
inline void refuse_forward_ad(const char* op, bool any_forward_grad) {
  TORCH_CHECK(!any_forward_grad, op, ": jvp is not implemented (forward-mode AD is not supported); use reverse mode");
}

// Refuses to record a node inside torch.func transforms (grad, vjp, jacrev, hessian, ...), as
// torch::autograd::Function does: the node lives at one functorch level, so nested transforms
// (grad of grad, jacrev) would differentiate it wrongly and silently (measured: wrong values).
// The functorch TLS says whether a transform is active only through this check (it throws).
inline void refuse_functorch_levels(const char* op) {
  const auto& functorch = at::functorch::functorchTLSAccessor();
  if (!functorch) return;
  try {
    functorch->checkSupportsCppAutogradFunction();
  } catch (const c10::Error&) {
    TORCH_CHECK(false, op,
                ": cannot be differentiated inside torch.func transforms (grad, vjp, jacrev, hessian, ...); "
                "use torch.autograd (backward, autograd.grad), or torch.func with the parameters detached");
  }
}

}  // namespace fastnn
