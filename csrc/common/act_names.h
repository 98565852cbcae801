// Activation names as the Python API spells them (torch-side helper, host only).
#pragma once
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>
#include <string>

#include "activations.h"

namespace fastnn {

inline const char* const* activation_names() {
  static const char* const names[kNumActs] = {"identity", "relu", "leaky_relu", "sigmoid", "tanh",
                                              "gelu", "gelu_tanh", "silu", "softplus"};
  return names;
}

// op: anything printable that names the op in the error (a string, or fastnn.mlp's OpName).
template <class Op>
Act parse_activation(const Op& op, c10::string_view name) {
  const char* const* names = activation_names();
  for (int i = 0; i < kNumActs; ++i)
    if (name == names[i]) return Act(i);
  std::string all;
  for (int i = 0; i < kNumActs; ++i) all += std::string(i ? ", " : "") + names[i];
  TORCH_CHECK_VALUE(false, op, ": unknown activation '", std::string(name), "' (expected one of: ", all, ")");
}

}  // namespace fastnn
