// fastnn::adam_, rmsprop_, sgd_, adagrad_ on the CPU: validate everything, then one kernel call
// (csrc/optim/optim_cpu_kernels.h) for all tensors of all param groups.
//
// Nothing is modified until every argument has been checked, so a bad input leaves parameters and
// state untouched. Tensors whose layout the kernel cannot stream directly (a parameter that is not
// dense, or grad/state strides that differ from the parameter's) are staged through contiguous
// copies and copied back: the real parameter is always the one updated.
#include <torch/library.h>
#include <ATen/ATen.h>

#include <cmath>

#include "../cpu_isa/cpu_isa.h"

namespace fastnn {
namespace {

using at::Tensor;
using at::TensorList;

struct Row {
  Tensor p, g, s[3], step;
  bool use[3] = {false, false, false};
  int flags = 0;
  double k[8] = {0, 0, 0, 0, 0, 0, 0, 0};
};

DType opt_dtype(const char* op, const Tensor& p) {
  switch (p.scalar_type()) {
    case at::kFloat: return DType::F32;
    case at::kDouble: return DType::F64;
    case at::kBFloat16: return DType::BF16;
    default:
      TORCH_CHECK(!p.is_complex(), op, ": complex parameters are not supported");
      TORCH_CHECK(false, op, ": parameters of dtype ", p.scalar_type(),
                  " are not supported (float32, float64, bfloat16)");
  }
}

// Per-tensor group index from group_sizes; checks that the sizes cover the tensors exactly.
std::vector<int64_t> group_index(const char* op, at::IntArrayRef group_sizes, int64_t n) {
  std::vector<int64_t> gi;
  gi.reserve(n);
  for (size_t gidx = 0; gidx < group_sizes.size(); ++gidx) {
    TORCH_CHECK(group_sizes[gidx] >= 0, op, ": negative group size");
    for (int64_t j = 0; j < group_sizes[gidx]; ++j) gi.push_back(int64_t(gidx));
  }
  TORCH_CHECK(int64_t(gi.size()) == n, op, ": group_sizes add up to ", gi.size(), " but ", n,
              " parameters were given");
  return gi;
}

template <class L>
void check_group_list(const char* op, const char* name, const L& list, size_t ngroups) {
  TORCH_CHECK(list.size() == ngroups, op, ": ", name, " has ", list.size(), " entries for ", ngroups, " groups");
}

void check_list_len(const char* op, const char* name, TensorList l, int64_t n, bool required) {
  TORCH_CHECK(l.size() == 0 ? !required || n == 0 : int64_t(l.size()) == n, op, ": ", name, " has ", l.size(),
              " tensors but there are ", n, " parameters");
}

void validate_rows(const char* op, const std::vector<Row>& rows, const c10::optional<Tensor>& grad_scale,
                   const c10::optional<Tensor>& found_inf) {
  static const char* state_names[3] = {"state 0", "state 1", "state 2"};
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    TORCH_CHECK(r.p.defined() && r.g.defined(), op, ": parameter ", i, " or its gradient is undefined");
    TORCH_CHECK(!r.g.is_sparse() && !r.p.is_sparse(), op, ": sparse gradients are not supported (parameter ", i,
                ")");
    TORCH_CHECK(r.p.device().is_cpu() && r.g.device().is_cpu(), op,
                ": CPU kernel got a tensor on another device (parameter ", i, " is on ", r.p.device(),
                ", its gradient on ", r.g.device(), ")");
    opt_dtype(op, r.p);
    TORCH_CHECK(r.g.scalar_type() == r.p.scalar_type(), op, ": parameter ", i, " is ", r.p.scalar_type(),
                " but its gradient is ", r.g.scalar_type());
    TORCH_CHECK(r.g.sizes() == r.p.sizes(), op, ": parameter ", i, " has shape ", r.p.sizes(),
                " but its gradient has shape ", r.g.sizes());
    for (int s = 0; s < 3; ++s) {
      if (!r.use[s]) continue;
      TORCH_CHECK(r.s[s].defined() && r.s[s].sizes() == r.p.sizes() && r.s[s].scalar_type() == r.p.scalar_type() &&
                      r.s[s].device() == r.p.device(),
                  op, ": ", state_names[s], " of parameter ", i, " must match the parameter's shape, dtype and device");
    }
    if (r.step.defined()) {
      TORCH_CHECK(r.step.numel() == 1 && r.step.device().is_cpu() &&
                      (r.step.scalar_type() == at::kFloat || r.step.scalar_type() == at::kDouble),
                  op, ": step of parameter ", i, " must be a float32/float64 CPU scalar tensor");
    }
  }
  for (const auto* t : {&grad_scale, &found_inf}) {
    if (t->has_value() && (*t)->defined())
      TORCH_CHECK((*t)->numel() == 1 && (*t)->device().is_cpu(), op,
                  ": grad_scale and found_inf must be one-element CPU tensors");
  }
}

bool found_inf_set(const c10::optional<Tensor>& found_inf) {
  return found_inf.has_value() && found_inf->defined() && found_inf->item<double>() != 0.0;
}

// Increments step and returns its new value (as torch's `step_t += 1; step = step_t.item()`).
double bump_step(const Tensor& step) {
  if (step.scalar_type() == at::kFloat) {
    float* v = step.data_ptr<float>();
    *v += 1.f;
    return *v;
  }
  double* v = step.data_ptr<double>();
  *v += 1.0;
  return *v;
}

bool same_layout(const Tensor& a, const Tensor& b) { return a.strides() == b.strides(); }

void execute(const char* op, OptKind kind, std::vector<Row>& rows, const c10::optional<Tensor>& grad_scale) {
  float scale = 1.f;
  const bool unscale = grad_scale.has_value() && grad_scale->defined();
  if (unscale) scale = grad_scale->item<float>();
  struct Staged { Tensor dst, tmp; };
  std::vector<Staged> copy_back;
  std::vector<OptSlot> slots[3];
  for (Row& r : rows) {
    bool direct = r.p.is_non_overlapping_and_dense();
    for (int s = 0; s < 3; ++s) direct = direct && (!r.use[s] || same_layout(r.s[s], r.p));
    OptSlot slot{};
    if (direct) {
      // A gradient laid out differently is only read: one copy in the parameter's layout.
      Tensor g = same_layout(r.g, r.p) ? r.g : at::empty_like(r.p).copy_(r.g);
      slot.param = r.p.data_ptr();
      slot.grad = g.data_ptr();
      for (int s = 0; s < 3; ++s) slot.state[s] = r.use[s] ? r.s[s].data_ptr() : nullptr;
      if (!same_layout(r.g, r.p)) copy_back.push_back({Tensor(), g});  // keeps the copy alive
    } else {
      Tensor p = r.p.contiguous();
      copy_back.push_back({r.p, p});
      slot.param = p.data_ptr();
      Tensor g = r.g.contiguous();
      copy_back.push_back({Tensor(), g});
      slot.grad = g.data_ptr();
      for (int s = 0; s < 3; ++s) {
        if (!r.use[s]) continue;
        Tensor t = r.s[s].contiguous();
        if (!t.is_same(r.s[s])) copy_back.push_back({r.s[s], t});
        slot.state[s] = t.data_ptr();
      }
    }
    slot.numel = r.p.numel();
    slot.flags = r.flags;
    for (int j = 0; j < 8; ++j) slot.k[j] = r.k[j];
    slots[int(opt_dtype(op, r.p))].push_back(slot);
  }
  const auto& kern = optim_cpu_kernels();
  for (int d = 0; d < 3; ++d)
    if (!slots[d].empty()) kern.step(kind, DType(d), slots[d].data(), int64_t(slots[d].size()), unscale ? &scale : nullptr);
  for (auto& c : copy_back)
    if (c.dst.defined()) c.dst.copy_(c.tmp);
}

template <class T>
const T& at_group(const std::vector<T>& v, int64_t g) { return v[g]; }

void adam_cpu(TensorList params, TensorList grads, TensorList exp_avgs, TensorList exp_avg_sqs,
              TensorList max_exp_avg_sqs, TensorList steps, at::IntArrayRef group_sizes, at::ArrayRef<double> lr,
              at::ArrayRef<double> beta1, at::ArrayRef<double> beta2, at::ArrayRef<double> weight_decay,
              at::ArrayRef<double> eps, c10::List<bool> amsgrad, c10::List<bool> maximize, bool decoupled,
              c10::List<bool> lr_f32, const c10::optional<Tensor>& grad_scale, const c10::optional<Tensor>& found_inf) {
  const char* op = decoupled ? "fastnn.optim.AdamW" : "fastnn.optim.Adam";
  const int64_t n = params.size();
  const size_t G = group_sizes.size();
  auto gi = group_index(op, group_sizes, n);
  check_group_list(op, "lr", lr, G); check_group_list(op, "betas", beta1, G); check_group_list(op, "betas", beta2, G);
  check_group_list(op, "weight_decay", weight_decay, G); check_group_list(op, "eps", eps, G);
  check_group_list(op, "amsgrad", amsgrad, G); check_group_list(op, "maximize", maximize, G);
  check_group_list(op, "lr_is_float32", lr_f32, G);
  check_list_len(op, "grads", grads, n, true); check_list_len(op, "exp_avgs", exp_avgs, n, true);
  check_list_len(op, "exp_avg_sqs", exp_avg_sqs, n, true); check_list_len(op, "state_steps", steps, n, true);
  bool any_ams = false;
  for (size_t g = 0; g < G; ++g) {
    TORCH_CHECK(lr[g] >= 0, op, ": invalid learning rate: ", lr[g]);
    TORCH_CHECK(eps[g] >= 0, op, ": invalid epsilon value: ", eps[g]);
    TORCH_CHECK(beta1[g] >= 0 && beta1[g] < 1, op, ": invalid beta parameter at index 0: ", beta1[g]);
    TORCH_CHECK(beta2[g] >= 0 && beta2[g] < 1, op, ": invalid beta parameter at index 1: ", beta2[g]);
    TORCH_CHECK(weight_decay[g] >= 0, op, ": invalid weight_decay value: ", weight_decay[g]);
    any_ams = any_ams || amsgrad.get(g);
  }
  check_list_len(op, "max_exp_avg_sqs", max_exp_avg_sqs, n, any_ams);
  std::vector<Row> rows(n);
  for (int64_t i = 0; i < n; ++i) {
    Row& r = rows[i];
    const int64_t g = gi[i];
    r.p = params[i]; r.g = grads[i]; r.s[0] = exp_avgs[i]; r.s[1] = exp_avg_sqs[i]; r.step = steps[i];
    r.use[0] = r.use[1] = true;
    if (amsgrad.get(g)) { r.s[2] = max_exp_avg_sqs[i]; r.use[2] = true; }
    r.flags = (maximize.get(g) ? kMaximize : 0) | (weight_decay[g] != 0 ? kWeightDecay : 0) |
              (amsgrad.get(g) ? kAmsgrad : 0) | (decoupled ? kDecoupled : 0);
  }
  validate_rows(op, rows, grad_scale, found_inf);
  if (found_inf_set(found_inf)) return;
  for (int64_t i = 0; i < n; ++i) {
    Row& r = rows[i];
    const int64_t g = gi[i];
    const double step = bump_step(r.step);
    const double bc1 = 1 - std::pow(beta1[g], step), bc2 = 1 - std::pow(beta2[g], step);
    double step_size = lr[g] / bc1, decay_keep = 1 - lr[g] * weight_decay[g];
    if (lr_f32.get(g)) {
      step_size = double(float(lr[g]) / float(bc1));
      decay_keep = double(1.f - float(lr[g]) * float(weight_decay[g]));
    }
    r.k[0] = weight_decay[g]; r.k[1] = decay_keep; r.k[2] = 1 - beta1[g];
    r.k[3] = beta2[g]; r.k[4] = 1 - beta2[g]; r.k[5] = std::pow(bc2, 0.5); r.k[6] = eps[g]; r.k[7] = -step_size;
  }
  execute(op, OptKind::Adam, rows, grad_scale);
}

void rmsprop_cpu(TensorList params, TensorList grads, TensorList square_avgs, TensorList grad_avgs,
                 TensorList momentum_buffers, TensorList steps, at::IntArrayRef group_sizes, at::ArrayRef<double> lr,
                 at::ArrayRef<double> alpha, at::ArrayRef<double> eps, at::ArrayRef<double> weight_decay,
                 at::ArrayRef<double> momentum, c10::List<bool> centered, c10::List<bool> maximize,
                 const c10::optional<Tensor>& grad_scale, const c10::optional<Tensor>& found_inf) {
  const char* op = "fastnn.optim.RMSprop";
  const int64_t n = params.size();
  const size_t G = group_sizes.size();
  auto gi = group_index(op, group_sizes, n);
  check_group_list(op, "lr", lr, G); check_group_list(op, "alpha", alpha, G); check_group_list(op, "eps", eps, G);
  check_group_list(op, "weight_decay", weight_decay, G); check_group_list(op, "momentum", momentum, G);
  check_group_list(op, "centered", centered, G); check_group_list(op, "maximize", maximize, G);
  check_list_len(op, "grads", grads, n, true); check_list_len(op, "square_avgs", square_avgs, n, true);
  check_list_len(op, "state_steps", steps, n, true);
  bool any_c = false, any_m = false;
  for (size_t g = 0; g < G; ++g) {
    TORCH_CHECK(lr[g] >= 0, op, ": invalid learning rate: ", lr[g]);
    TORCH_CHECK(eps[g] >= 0, op, ": invalid epsilon value: ", eps[g]);
    TORCH_CHECK(momentum[g] >= 0, op, ": invalid momentum value: ", momentum[g]);
    TORCH_CHECK(weight_decay[g] >= 0, op, ": invalid weight_decay value: ", weight_decay[g]);
    TORCH_CHECK(alpha[g] >= 0, op, ": invalid alpha value: ", alpha[g]);
    any_c = any_c || centered.get(g);
    any_m = any_m || momentum[g] > 0;
  }
  check_list_len(op, "grad_avgs", grad_avgs, n, any_c);
  check_list_len(op, "momentum_buffers", momentum_buffers, n, any_m);
  std::vector<Row> rows(n);
  for (int64_t i = 0; i < n; ++i) {
    Row& r = rows[i];
    const int64_t g = gi[i];
    r.p = params[i]; r.g = grads[i]; r.s[0] = square_avgs[i]; r.use[0] = true; r.step = steps[i];
    if (centered.get(g)) { r.s[1] = grad_avgs[i]; r.use[1] = true; }
    if (momentum[g] > 0) { r.s[2] = momentum_buffers[i]; r.use[2] = true; }
    r.flags = (maximize.get(g) ? kMaximize : 0) | (weight_decay[g] != 0 ? kWeightDecay : 0) |
              (centered.get(g) ? kCentered : 0) | (momentum[g] > 0 ? kMomentum : 0);
    r.k[0] = weight_decay[g]; r.k[1] = alpha[g]; r.k[2] = 1 - alpha[g]; r.k[3] = eps[g]; r.k[4] = momentum[g];
    r.k[5] = -lr[g];
  }
  validate_rows(op, rows, grad_scale, found_inf);
  if (found_inf_set(found_inf)) return;
  for (Row& r : rows) bump_step(r.step);
  execute(op, OptKind::RMSprop, rows, grad_scale);
}

void sgd_cpu(TensorList params, TensorList grads, TensorList momentum_buffers, c10::List<bool> first_step,
             at::IntArrayRef group_sizes, at::ArrayRef<double> lr, at::ArrayRef<double> momentum,
             at::ArrayRef<double> dampening, at::ArrayRef<double> weight_decay, c10::List<bool> nesterov,
             c10::List<bool> maximize, const c10::optional<Tensor>& grad_scale,
             const c10::optional<Tensor>& found_inf) {
  const char* op = "fastnn.optim.SGD";
  const int64_t n = params.size();
  const size_t G = group_sizes.size();
  auto gi = group_index(op, group_sizes, n);
  check_group_list(op, "lr", lr, G); check_group_list(op, "momentum", momentum, G);
  check_group_list(op, "dampening", dampening, G); check_group_list(op, "weight_decay", weight_decay, G);
  check_group_list(op, "nesterov", nesterov, G); check_group_list(op, "maximize", maximize, G);
  check_list_len(op, "grads", grads, n, true);
  bool any_m = false;
  for (size_t g = 0; g < G; ++g) {
    TORCH_CHECK(lr[g] >= 0, op, ": invalid learning rate: ", lr[g]);
    TORCH_CHECK(momentum[g] >= 0, op, ": invalid momentum value: ", momentum[g]);
    TORCH_CHECK(weight_decay[g] >= 0, op, ": invalid weight_decay value: ", weight_decay[g]);
    TORCH_CHECK(!nesterov.get(g) || (momentum[g] > 0 && dampening[g] == 0), op,
                ": Nesterov momentum requires a momentum and zero dampening");
    any_m = any_m || momentum[g] != 0;
  }
  check_list_len(op, "momentum_buffers", momentum_buffers, n, any_m);
  TORCH_CHECK(int64_t(first_step.size()) == (any_m ? n : int64_t(first_step.size())), op,
              ": first_step must have one entry per parameter");
  std::vector<Row> rows(n);
  for (int64_t i = 0; i < n; ++i) {
    Row& r = rows[i];
    const int64_t g = gi[i];
    r.p = params[i]; r.g = grads[i];
    const bool mom = momentum[g] != 0;
    if (mom) { r.s[0] = momentum_buffers[i]; r.use[0] = true; }
    r.flags = (maximize.get(g) ? kMaximize : 0) | (weight_decay[g] != 0 ? kWeightDecay : 0) |
              (mom ? kMomentum : 0) | (nesterov.get(g) ? kNesterov : 0) |
              (mom && first_step.get(i) ? kFirstStep : 0);
    r.k[0] = weight_decay[g]; r.k[1] = momentum[g]; r.k[2] = 1 - dampening[g]; r.k[3] = -lr[g];
  }
  validate_rows(op, rows, grad_scale, found_inf);
  if (found_inf_set(found_inf)) return;
  execute(op, OptKind::SGD, rows, grad_scale);
}

void adagrad_cpu(TensorList params, TensorList grads, TensorList state_sums, TensorList steps,
                 at::IntArrayRef group_sizes, at::ArrayRef<double> lr, at::ArrayRef<double> lr_decay,
                 at::ArrayRef<double> weight_decay, at::ArrayRef<double> eps, c10::List<bool> maximize,
                 c10::List<bool> lr_f32, const c10::optional<Tensor>& grad_scale, const c10::optional<Tensor>& found_inf) {
  const char* op = "fastnn.optim.Adagrad";
  const int64_t n = params.size();
  const size_t G = group_sizes.size();
  auto gi = group_index(op, group_sizes, n);
  check_group_list(op, "lr", lr, G); check_group_list(op, "lr_decay", lr_decay, G);
  check_group_list(op, "weight_decay", weight_decay, G); check_group_list(op, "eps", eps, G);
  check_group_list(op, "maximize", maximize, G); check_group_list(op, "lr_is_float32", lr_f32, G);
  check_list_len(op, "grads", grads, n, true); check_list_len(op, "state_sums", state_sums, n, true);
  check_list_len(op, "state_steps", steps, n, true);
  for (size_t g = 0; g < G; ++g) {
    TORCH_CHECK(lr[g] >= 0, op, ": invalid learning rate: ", lr[g]);
    TORCH_CHECK(lr_decay[g] >= 0, op, ": invalid lr_decay value: ", lr_decay[g]);
    TORCH_CHECK(weight_decay[g] >= 0, op, ": invalid weight_decay value: ", weight_decay[g]);
    TORCH_CHECK(eps[g] >= 0, op, ": invalid epsilon value: ", eps[g]);
  }
  std::vector<Row> rows(n);
  for (int64_t i = 0; i < n; ++i) {
    Row& r = rows[i];
    const int64_t g = gi[i];
    r.p = params[i]; r.g = grads[i]; r.s[0] = state_sums[i]; r.use[0] = true; r.step = steps[i];
    r.flags = (maximize.get(g) ? kMaximize : 0) | (weight_decay[g] != 0 ? kWeightDecay : 0);
  }
  validate_rows(op, rows, grad_scale, found_inf);
  if (found_inf_set(found_inf)) return;
  for (int64_t i = 0; i < n; ++i) {
    Row& r = rows[i];
    const int64_t g = gi[i];
    const double step = bump_step(r.step);
    const double denom = 1 + (step - 1) * lr_decay[g];
    const double clr = lr_f32.get(g) ? double(float(lr[g]) / float(denom)) : lr[g] / denom;
    r.k[0] = weight_decay[g]; r.k[1] = eps[g]; r.k[2] = -clr;
  }
  execute(op, OptKind::Adagrad, rows, grad_scale);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastnn, CPU, m) {
  m.impl("adam_", &adam_cpu);
  m.impl("rmsprop_", &rmsprop_cpu);
  m.impl("sgd_", &sgd_cpu);
  m.impl("adagrad_", &adagrad_cpu);
}

}  // namespace fastnn
