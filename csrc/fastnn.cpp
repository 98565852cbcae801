// Operator schemas of the fastnn library, and the Python module that loads them.
//
// Where each op lives:
//   fastnn::linear_act*, activation   csrc/linear_act/  (linear_act.cpp: CPU + autograd, linear_act_cuda.*: CUDA)
//   fastnn::mlp*             csrc/mlp/  (mlp.cpp: both backends through linear_act's kernels, one autograd node)
//   fastnn::adam_, rmsprop_, sgd_, adagrad_   csrc/optim/  (optim.cpp: CPU, optim_cuda.*: CUDA)
#include <torch/extension.h>

#include "common/act_names.h"
#include "cpu_isa/cpu_isa.h"
#include "common/path_choice.h"
#include "linear_act/linear_act_common.h"
#include "mlp/mlp_common.h"
#include "optim/optim.h"

TORCH_LIBRARY(fastnn, m) {
  // y = act(input @ weight.T + bias). Differentiable (autograd kernel in linear_act.cpp).
  m.def("linear_act(Tensor input, Tensor weight, Tensor? bias, str activation, float negative_slope) -> Tensor");
  // Forward that also returns what backward needs: the pre-activation, or an empty tensor when the
  // activation's derivative is computed from the output.
  m.def(
      "linear_act_forward(Tensor input, Tensor weight, Tensor? bias, str activation, float negative_slope)"
      " -> (Tensor, Tensor)");
  // saved: the output or the pre-activation, as linear_act_forward decided. Unrequested gradients
  // (output_mask false, or no bias) come back as empty tensors.
  m.def(
      "linear_act_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor saved, bool has_bias,"
      " str activation, float negative_slope, bool[2] output_mask) -> (Tensor, Tensor, Tensor)");
  // y = act(z) with the forward kernels' activation pass (what mlp's backward recomputes).
  m.def("activation(Tensor z, str activation, float negative_slope) -> Tensor");

  // A chain of Linear+activation layers: x <- act_l(x @ weights[l].T + biases[l]) for each layer l.
  // Differentiable (one autograd node for the chain; autograd kernel in csrc/mlp/mlp.cpp).
  m.def("mlp(Tensor input, Tensor[] weights, Tensor?[] biases, str[] activations, float[] negative_slopes) -> Tensor");
  // Forward that also returns what backward reads, in one flat arena: layer after layer, its output
  // or its pre-activation (as linear_act_forward decides); none for the last layer when that is
  // its output (backward then takes the output). The layout inside a layer's block is the
  // backend's own (the CPU's cache-blocked path keeps tiles transposed): only mlp_backward reads it.
  m.def(
      "mlp_forward(Tensor input, Tensor[] weights, Tensor?[] biases, str[] activations, float[] negative_slopes)"
      " -> (Tensor, Tensor)");
  // Returns (grad_input, or empty unless input_grad; grad_weights; grad_biases, empty for layers
  // without bias). output: mlp_forward's (read when the last layer saved nothing in the arena).
  m.def(
      "mlp_backward(Tensor grad_output, Tensor input, Tensor[] weights, Tensor?[] biases, Tensor saved,"
      " Tensor output, str[] activations, float[] negative_slopes, bool input_grad) -> (Tensor, Tensor[], Tensor[])");

  // lr_is_float32[g]: group g's lr is a float32 tensor; torch then computes lr-derived scalars
  // (Adam's lr / bias_correction1, Adagrad's decayed lr) in float32, and so do we.
  // Multi-tensor optimizer steps. Tensors of all param groups in one call; per-group hyper-parameters
  // as lists, group_sizes[i] tensors per group, in order. Steps (float32 scalars) are incremented here.
  m.def(
      "adam_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs,"
      " Tensor(d!)[] max_exp_avg_sqs, Tensor(e!)[] state_steps, int[] group_sizes, float[] lr, float[] beta1,"
      " float[] beta2, float[] weight_decay, float[] eps, bool[] amsgrad, bool[] maximize,"
      " bool decoupled_weight_decay, bool[] lr_is_float32, Tensor? grad_scale=None, Tensor? found_inf=None) -> ()");
  m.def(
      "rmsprop_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] square_avgs, Tensor(c!)[] grad_avgs,"
      " Tensor(d!)[] momentum_buffers, Tensor(e!)[] state_steps, int[] group_sizes, float[] lr, float[] alpha,"
      " float[] eps, float[] weight_decay, float[] momentum, bool[] centered, bool[] maximize,"
      " Tensor? grad_scale=None, Tensor? found_inf=None) -> ()");
  // first_step[i]: tensor i's momentum buffer is new and is set to its gradient (torch's clone).
  m.def(
      "sgd_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] momentum_buffers, bool[] first_step,"
      " int[] group_sizes, float[] lr, float[] momentum, float[] dampening, float[] weight_decay,"
      " bool[] nesterov, bool[] maximize, Tensor? grad_scale=None, Tensor? found_inf=None) -> ()");
  m.def(
      "adagrad_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] state_sums, Tensor(c!)[] state_steps,"
      " int[] group_sizes, float[] lr, float[] lr_decay, float[] weight_decay, float[] eps, bool[] maximize,"
      " bool[] lr_is_float32, Tensor? grad_scale=None, Tensor? found_inf=None) -> ()");
}

bool fastnn_built_with_cuda();  // csrc/cuda_info.cpp

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastnn native kernels (ops are under torch.ops.fastnn)";
  m.def("cpu_isa", &fastnn::cpu_isa, "Instruction set of the CPU kernels in use");
  m.def("cpu_isas_supported", &fastnn::cpu_isas_supported, "Instruction sets this CPU can run");
  m.def("set_cpu_isa", &fastnn::set_cpu_isa, "Switch the CPU kernels to another supported instruction set");
  m.def("built_with_cuda", &fastnn_built_with_cuda, "Whether the CUDA kernels were compiled in");
  m.def(
      "activation_names",
      [] { return std::vector<std::string>(fastnn::activation_names(), fastnn::activation_names() + fastnn::kNumActs); },
      "Activation names in the order of the kernels' table");
  m.def(
      "saves_output",
      [](const std::string& act, double slope) {
        return fastnn::act_saves_output(fastnn::parse_activation("fastnn.linear_act", act), slope);
      },
      "Whether backward reads the output (else the pre-activation) for this activation");
  m.attr("mlp_tiled_max_width") = fastnn::kMlpTiledMaxWidth;
  m.def(
      "mlp_path",
      [](const at::Tensor& input, const std::vector<at::Tensor>& weights,
         c10::optional<std::vector<c10::optional<at::Tensor>>> biases,
         c10::optional<std::vector<std::string>> activations, c10::optional<std::vector<double>> slopes,
         bool training) {
        const size_t L = weights.size();
        fastnn::Biases b;
        for (size_t l = 0; l < L; ++l) b.push_back(biases && l < biases->size() ? (*biases)[l] : c10::nullopt);
        return fastnn::mlp_path(input, weights, b, activations.value_or(std::vector<std::string>(L, "identity")),
                                slopes.value_or(std::vector<double>(L, 0.01)), training);
      },
      pybind11::arg("input"), pybind11::arg("weights"), pybind11::arg("biases") = pybind11::none(),
      pybind11::arg("activations") = pybind11::none(), pybind11::arg("negative_slopes") = pybind11::none(),
      pybind11::arg("training") = true,
      "Which kernels fastnn.mlp runs for this input and these layers, and why: (path, reason)");
  m.def("linear_act", &fastnn::linear_act_eager, pybind11::arg("input"), pybind11::arg("weight"),
        pybind11::arg("bias"), pybind11::arg("activation"), pybind11::arg("negative_slope"),
        pybind11::call_guard<pybind11::gil_scoped_release>(),
        "torch.ops.fastnn.linear_act called typed: fastnn.linear_act's eager entry (fastnn/_ops.py)");
  m.def("mlp", &fastnn::mlp_eager, pybind11::arg("input"), pybind11::arg("weights"), pybind11::arg("biases"),
        pybind11::arg("activations"), pybind11::arg("negative_slopes"),
        pybind11::call_guard<pybind11::gil_scoped_release>(),
        "torch.ops.fastnn.mlp called typed: fastnn.mlp's eager entry (fastnn/_ops.py)");
  m.def("linear_act_path", &fastnn::linear_act_path, pybind11::arg("input"), pybind11::arg("weight"),
        pybind11::arg("bias") = pybind11::none(), pybind11::arg("activation") = "identity",
        pybind11::arg("negative_slope") = 0.01, pybind11::arg("training") = true,
        "Which kernels fastnn.linear_act runs for this input and layer, and why: (path, reason)");
  m.def("set_cpu_path", &fastnn::set_cpu_path, "Force CPU paths ('tiled', 'layers', 'direct', 'gemm', comma-separated) or 'auto'");
  m.def("get_cpu_path", &fastnn::get_cpu_path, "The forced CPU paths, or 'auto'");
  m.def("cpu_path_choices", &fastnn::cpu_path_choices, "Every path chosen in this process (CPU, and CUDA where measured): (key, path, reason)");
  m.def("clear_cpu_path_choices", &fastnn::clear_cpu_path_choices, "Forget this process's path choices");
  m.def("cpu_path_context", &fastnn::cpu_path_context,
        "A number that changes whenever an earlier CPU path answer may no longer hold (path forcing or "
        "forgetting, the CPU kernel table, autocast, deterministic mode)");
  m.def("cpu_path_cache_file", &fastnn::cpu_path_cache_file, "The on-disk cache of CPU path choices ('' if off)");
  m.def("q8_quantize", &fastnn::q8_quantize, pybind11::arg("values"), pybind11::arg("signed"),
        "8-bit optimizer state: (uint8 codes, float32 scale per block of 256) of float values");
  m.def("q8_dequantize", &fastnn::q8_dequantize, pybind11::arg("codes"), pybind11::arg("scales"),
        pybind11::arg("signed"), "8-bit optimizer state back to float32");
  pybind11::class_<fastnn::OptimizerPlan>(m, "OptimizerPlan")
      .def(pybind11::init<const std::string&, std::vector<at::Tensor>, std::vector<int64_t>,
                          const std::vector<std::vector<c10::optional<at::Tensor>>>&,
                          const std::vector<c10::optional<at::Tensor>>&, std::vector<bool>>())
      .def("fresh", &fastnn::OptimizerPlan::fresh)
      // Without the GIL: steps of optimizers in other Python threads run at the same time.
      .def("step", &fastnn::OptimizerPlan::step, pybind11::call_guard<pybind11::gil_scoped_release>(),
           pybind11::arg("h"), pybind11::arg("b"),
           pybind11::arg("grad_scale") = pybind11::none(), pybind11::arg("found_inf") = pybind11::none(),
           pybind11::arg("sr") = std::vector<std::vector<int64_t>>{});
}
