// fastnn::adam_, rmsprop_, sgd_, adagrad_ on the CPU, and OptimizerPlan, the cached form the
// Python optimizers call every step. Both validate everything, then make one kernel call
// (csrc/optim/optim_cpu_kernels.h) for all tensors of all param groups.
//
// Nothing is modified until every argument has been checked, so a bad input leaves parameters and
// state untouched. Tensors whose layout the kernel cannot stream directly (a parameter that is not
// dense, or grad/state strides that differ from the parameter's) are staged through contiguous
// copies and copied back: the real parameter is always the one updated.
#include "optim.h"

#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/library.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <tuple>

#include "../common/cpu_fp_env.h"
#include "../cpu_isa/cpu_isa.h"
#include "optim_functors.h"

namespace fastnn {
namespace {

using at::Tensor;
using optim_rules::make_consts;
using at::TensorList;

struct Row {
  Tensor p, g, s[3], step;
  Tensor q[3];  // 8-bit state: block scales of s[s] (uint8 codes)
  bool use[3] = {false, false, false};
  bool first = false;  // SGD: momentum buffer is new
  int64_t group = 0;
  int64_t index = 0;   // the parameter's position in the optimizer (stochastic rounding's key)
  int flags = 0;
  double k[8] = {0, 0, 0, 0, 0, 0, 0, 0};
};

// ---- what each optimizer's group hyper-parameters mean (GroupHP.h / GroupHP.b) ----
//   Adam:    h = lr, beta1, beta2, weight_decay, eps   b = amsgrad, maximize, lr_is_float32, decoupled
//   RMSprop: h = lr, alpha, eps, weight_decay, momentum b = centered, maximize
//   SGD:     h = lr, momentum, dampening, weight_decay  b = nesterov, maximize
//   Adagrad: h = lr, lr_decay, weight_decay, eps        b = maximize, lr_is_float32

const char* op_name(OptKind kind, const GroupHP& hp) {
  switch (kind) {
    case OptKind::Adam: return hp.b[3] ? "fastnn.optim.AdamW" : "fastnn.optim.Adam";
    case OptKind::RMSprop: return "fastnn.optim.RMSprop";
    case OptKind::SGD: return "fastnn.optim.SGD";
    case OptKind::Adagrad: return "fastnn.optim.Adagrad";
  }
  return "fastnn.optim";
}

void check_hp(OptKind kind, const GroupHP& hp) {
  const char* op = op_name(kind, hp);
  const double lr = hp.h[0];
  TORCH_CHECK(lr >= 0, op, ": invalid learning rate: ", lr);
  switch (kind) {
    case OptKind::Adam:
      TORCH_CHECK(hp.h[4] >= 0, op, ": invalid epsilon value: ", hp.h[4]);
      TORCH_CHECK(hp.h[1] >= 0 && hp.h[1] < 1, op, ": invalid beta parameter at index 0: ", hp.h[1]);
      TORCH_CHECK(hp.h[2] >= 0 && hp.h[2] < 1, op, ": invalid beta parameter at index 1: ", hp.h[2]);
      TORCH_CHECK(hp.h[3] >= 0, op, ": invalid weight_decay value: ", hp.h[3]);
      break;
    case OptKind::RMSprop:
      TORCH_CHECK(hp.h[2] >= 0, op, ": invalid epsilon value: ", hp.h[2]);
      TORCH_CHECK(hp.h[1] >= 0, op, ": invalid alpha value: ", hp.h[1]);
      TORCH_CHECK(hp.h[3] >= 0, op, ": invalid weight_decay value: ", hp.h[3]);
      TORCH_CHECK(hp.h[4] >= 0, op, ": invalid momentum value: ", hp.h[4]);
      break;
    case OptKind::SGD:
      TORCH_CHECK(hp.h[1] >= 0, op, ": invalid momentum value: ", hp.h[1]);
      TORCH_CHECK(hp.h[3] >= 0, op, ": invalid weight_decay value: ", hp.h[3]);
      TORCH_CHECK(!hp.b[0] || (hp.h[1] > 0 && hp.h[2] == 0), op,
                  ": Nesterov momentum requires a momentum and zero dampening");
      break;
    case OptKind::Adagrad:
      TORCH_CHECK(hp.h[1] >= 0, op, ": invalid lr_decay value: ", hp.h[1]);
      TORCH_CHECK(hp.h[2] >= 0, op, ": invalid weight_decay value: ", hp.h[2]);
      TORCH_CHECK(hp.h[3] >= 0, op, ": invalid epsilon value: ", hp.h[3]);
      break;
  }
}

// Which state tensors a row needs, and its flag bits.
void set_usage(OptKind kind, const GroupHP& hp, Row& r) {
  auto F = [](bool c, int f) { return c ? f : 0; };
  switch (kind) {
    case OptKind::Adam:
      r.use[0] = r.use[1] = true;
      r.use[2] = hp.b[0];
      r.flags = F(hp.b[1], kMaximize) | F(hp.h[3] != 0, kWeightDecay) | F(hp.b[0], kAmsgrad) | F(hp.b[3], kDecoupled);
      break;
    case OptKind::RMSprop:
      r.use[0] = true;
      r.use[1] = hp.b[0];
      r.use[2] = hp.h[4] > 0;
      r.flags = F(hp.b[1], kMaximize) | F(hp.h[3] != 0, kWeightDecay) | F(hp.b[0], kCentered) |
                F(hp.h[4] > 0, kMomentum);
      break;
    case OptKind::SGD:
      r.use[0] = hp.h[1] != 0;
      r.flags = F(hp.b[1], kMaximize) | F(hp.h[3] != 0, kWeightDecay) | F(hp.h[1] != 0, kMomentum) |
                F(hp.b[0], kNesterov) | F(hp.h[1] != 0 && r.first, kFirstStep);
      break;
    case OptKind::Adagrad:
      r.use[0] = true;
      r.flags = F(hp.b[0], kMaximize) | F(hp.h[2] != 0, kWeightDecay);
      break;
  }
}

// Constants of a row's update, from its group and its (already incremented) step.
void set_consts(OptKind kind, const GroupHP& hp, Row& r, double step) { make_consts(kind, hp.h, hp.b, step, r.k); }

// Storage code of a parameter: 0 float32, 1 float64, 2 float16 (CUDA only), 3 bfloat16.
int opt_dtype(const char* op, const Tensor& p) {
  switch (p.scalar_type()) {
    case at::kFloat: return 0;
    case at::kDouble: return 1;
    case at::kHalf:
      TORCH_CHECK(p.is_cuda(), op, ": float16 parameters are supported on CUDA only");
      return 2;
    case at::kBFloat16: return 3;
    default:
      TORCH_CHECK(!p.is_complex(), op, ": complex parameters are not supported");
      TORCH_CHECK(false, op, ": parameters of dtype ", p.scalar_type(),
                  " are not supported (float32, float64, bfloat16; float16 on CUDA)");
  }
}

DType cpu_dtype_of(int code) { return code == 0 ? DType::F32 : code == 1 ? DType::F64 : DType::BF16; }

// Storage code of a state tensor: a parameter's, or kQ8 for block-wise 8-bit codes (uint8).
constexpr int kQ8 = 4;
int state_code(const char* op, const Tensor& t) { return t.scalar_type() == at::kByte ? kQ8 : opt_dtype(op, t); }

// A tensor whose memory the kernels can address: not a wrapper subclass (DTensor and other
// __torch_dispatch__ subclasses carry a storage with no data of their own).
bool owns_storage(const Tensor& t) { return t.has_storage() && !t.key_set().has(c10::DispatchKey::Python); }

void validate_rows(const char* op, bool has_step, const std::vector<Row>& rows,
                   const c10::optional<Tensor>& grad_scale, const c10::optional<Tensor>& found_inf) {
  static const char* state_names[3] = {"first state", "second state", "third state"};
  const c10::Device device = rows.empty() ? c10::Device(c10::kCPU) : rows[0].p.device();
  TORCH_CHECK(device.is_cpu() || device.is_cuda(), op, ": parameters on ", device, " are not supported");
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    TORCH_CHECK(r.p.defined() && r.g.defined(), op, ": parameter ", i, " or its gradient is undefined");
    TORCH_CHECK(!r.g.is_sparse() && !r.p.is_sparse(), op, ": sparse gradients are not supported (parameter ", i,
                ")");
    TORCH_CHECK(r.p.device() == device && r.g.device() == device, op,
                ": all parameters and gradients must be on one device (parameter ", i, " is on ", r.p.device(),
                ", its gradient on ", r.g.device(), ", parameter 0 on ", device, ")");
    // Wrapper subclasses (DTensor, ...) have no storage of their own: fastnn.optim hands the kernel
    // their local tensors; one reaching here directly would be read through a null pointer.
    TORCH_CHECK(owns_storage(r.p) && owns_storage(r.g), op, ": parameter ", i,
                " or its gradient is a tensor subclass without storage of its own (a DTensor? pass its "
                "local tensor, as fastnn.optim does)");
    for (int s = 0; s < 3; ++s)
      TORCH_CHECK(!r.use[s] || !r.s[s].defined() || owns_storage(r.s[s]), op, ": ", state_names[s],
                  " of parameter ", i, " is a tensor subclass without storage of its own");
    opt_dtype(op, r.p);
    TORCH_CHECK(r.g.scalar_type() == r.p.scalar_type(), op, ": parameter ", i, " is ", r.p.scalar_type(),
                " but its gradient is ", r.g.scalar_type());
    TORCH_CHECK(r.g.sizes() == r.p.sizes(), op, ": parameter ", i, " has shape ", r.p.sizes(),
                " but its gradient has shape ", r.g.sizes());
    c10::optional<at::ScalarType> sd;
    for (int s = 0; s < 3; ++s) {
      if (!r.use[s]) continue;
      TORCH_CHECK(r.s[s].defined() && r.s[s].sizes() == r.p.sizes() && r.s[s].device() == r.p.device(), op, ": ",
                  state_names[s], " of parameter ", i, " must match the parameter's shape and device");
      TORCH_CHECK(!sd || *sd == r.s[s].scalar_type(), op, ": the state tensors of parameter ", i,
                  " must share one dtype, got ", *sd, " and ", r.s[s].scalar_type());
      sd = r.s[s].scalar_type();
    }
    if (sd) {
      const auto pd = r.p.scalar_type();
      const bool q8 = *sd == at::kByte && (pd == at::kFloat || pd == at::kBFloat16);
      const bool compact =
          (pd == at::kFloat && *sd == at::kBFloat16) || (pd == at::kBFloat16 && *sd == at::kFloat) || q8;
      TORCH_CHECK(*sd == pd || compact, op, ": state of parameter ", i, " is ", *sd, " but the parameter is ", pd,
                  " (state is the parameter's dtype, bfloat16 for float32 parameters or float32 for bfloat16 ones, "
                  "or uint8 codes of 8-bit state)");
      if (q8) {
        const int64_t blocks = (r.p.numel() + optim_rules::kQ8Block - 1) / optim_rules::kQ8Block;
        for (int s = 0; s < 3; ++s) {
          if (!r.use[s]) continue;
          TORCH_CHECK(r.s[s].is_contiguous(), op, ": 8-bit ", state_names[s], " of parameter ", i,
                      " must be contiguous");
          TORCH_CHECK(r.q[s].defined(), op, ": 8-bit ", state_names[s], " of parameter ", i,
                      " has no block scales (8-bit state runs through fastnn.optim optimizers)");
          TORCH_CHECK(r.q[s].scalar_type() == at::kFloat && r.q[s].is_contiguous() && r.q[s].numel() == blocks &&
                          r.q[s].device() == r.p.device() && owns_storage(r.q[s]),
                      op, ": block scales of the 8-bit ", state_names[s], " of parameter ", i,
                      " must be a contiguous float32 tensor of ", blocks, " values on the parameter's device, got ",
                      r.q[s].scalar_type(), " of ", r.q[s].numel());
        }
      }
    }
    if (has_step) {
      const bool host = r.step.defined() && r.step.device().is_cpu() &&
                        (r.step.scalar_type() == at::kFloat || r.step.scalar_type() == at::kDouble);
      const bool on_device = r.step.defined() && device.is_cuda() && r.step.device() == device &&
                             r.step.scalar_type() == at::kFloat;
      TORCH_CHECK(r.step.defined() && r.step.numel() == 1 && (host || on_device), op, ": step of parameter ", i,
                  " must be a float32/float64 CPU scalar tensor (or a float32 scalar on the parameter's CUDA device)");
    }
  }
  for (const auto* t : {&grad_scale, &found_inf}) {
    if (t->has_value() && (*t)->defined())
      TORCH_CHECK((*t)->numel() == 1 && (*t)->scalar_type() == at::kFloat &&
                      ((*t)->device() == device || (*t)->device().is_cpu()),
                  op, ": grad_scale and found_inf must be one-element float32 tensors on the parameters' device");
  }
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

}  // namespace

CudaOptimizerExec g_cuda_optimizer_exec = nullptr;

bool cuda_compact_state_enabled() {
  const char* e = std::getenv("FASTNN_CUDA_COMPACT_STATE");
  return e && std::string(e) == "1";
}

namespace {

// Stages the rows into kernel slots (staging copies where the layout needs them), runs the
// backend for each dtype present, and copies staged tensors back.
void execute(const char* op, OptKind kind, std::vector<Row>& rows, const c10::optional<Tensor>& grad_scale,
             const c10::optional<Tensor>& found_inf, const std::vector<GroupHP>& hps) {
  const bool cuda = !rows.empty() && rows[0].p.is_cuda();
  struct Staged { Tensor dst, tmp; };
  std::vector<Staged> keep;  // copies to write back (dst defined) or just to keep alive
  // One kernel call per (parameter dtype, state dtype, stochastic rounding) present.
  std::map<std::tuple<int, int, bool>, std::vector<OptSlot>> slots;
  for (Row& r : rows) {
    bool direct = r.p.is_non_overlapping_and_dense();
    for (int s = 0; s < 3; ++s) direct = direct && (!r.use[s] || same_layout(r.s[s], r.p));
    OptSlot slot{};
    if (direct) {
      // A gradient laid out differently is only read: one copy in the parameter's layout.
      Tensor g = r.g;
      if (!same_layout(r.g, r.p)) {
        g = at::empty_like(r.p).copy_(r.g);
        keep.push_back({Tensor(), g});
      }
      slot.param = r.p.data_ptr();
      slot.grad = g.data_ptr();
      for (int s = 0; s < 3; ++s) slot.state[s] = r.use[s] ? r.s[s].data_ptr() : nullptr;
    } else {
      Tensor p = r.p.contiguous();
      keep.push_back({r.p, p});
      Tensor g = r.g.contiguous();
      keep.push_back({Tensor(), g});
      slot.param = p.data_ptr();
      slot.grad = g.data_ptr();
      for (int s = 0; s < 3; ++s) {
        if (!r.use[s]) continue;
        Tensor t = r.s[s].contiguous();
        if (!t.is_same(r.s[s])) keep.push_back({r.s[s], t});
        slot.state[s] = t.data_ptr();
      }
    }
    slot.numel = r.p.numel();
    slot.flags = r.flags;
    std::copy(r.k, r.k + 8, slot.k);
    const GroupHP& hp = hps[r.group];
    std::copy(hp.h, hp.h + 5, slot.h);
    std::copy(hp.b, hp.b + 4, slot.b);
    if (r.step.defined()) {
      if (r.step.is_cuda()) slot.step_dev = r.step.data_ptr<float>();
      else slot.step_host = float(r.step.item<double>());
    }
    const int pd = opt_dtype(op, r.p);
    int sd = pd;
    for (int s = 0; s < 3; ++s)
      if (r.use[s]) sd = state_code(op, r.s[s]);
    if (sd == kQ8)
      for (int s = 0; s < 3; ++s) slot.qscale[s] = r.use[s] ? r.q[s].data_ptr<float>() : nullptr;
    const bool sr = hp.sr && (pd == 3 || sd == 3 || sd == kQ8);  // bf16 stores and 8-bit codes
    if (sr) slot.sr_key = optim_rules::sr_tensor_key(hp.sr_seed, hp.sr_step, uint64_t(r.index));
    slots[{pd, sd, sr}].push_back(slot);
  }
  if (cuda) {
    TORCH_CHECK(g_cuda_optimizer_exec, op, ": parameters are on CUDA but fastnn was built without CUDA kernels");
    c10::impl::VirtualGuardImpl impl(c10::DeviceType::CUDA);
    const c10::Device prev = impl.exchangeDevice(rows[0].p.device());
    struct Restore {
      c10::impl::VirtualGuardImpl& impl;
      c10::Device prev;
      ~Restore() { impl.uncheckedSetDevice(prev); }
    } restore{impl, prev};
    for (auto& [key, list] : slots)
      g_cuda_optimizer_exec(int(kind), std::get<0>(key), std::get<1>(key), std::get<2>(key), list, grad_scale,
                            found_inf);
  } else {
    float scale = 1.f;
    const bool unscale = grad_scale.has_value() && grad_scale->defined();
    if (unscale) scale = grad_scale->item<float>();
    const auto& kern = optim_cpu_kernels();
    for (auto& [key, list] : slots) {
      if (std::get<1>(key) == kQ8)
        kern.step_q8(kind, cpu_dtype_of(std::get<0>(key)), std::get<2>(key), list.data(), int64_t(list.size()),
                     unscale ? &scale : nullptr);
      else
        kern.step(kind, cpu_dtype_of(std::get<0>(key)), cpu_dtype_of(std::get<1>(key)), std::get<2>(key),
                  list.data(), int64_t(list.size()), unscale ? &scale : nullptr);
    }
  }
  for (auto& c : keep)
    if (c.dst.defined()) c.dst.copy_(c.tmp);
}

// The common step: check hyper-parameters and tensors, then (unless found_inf is set) bump the
// steps, compute the constants and run the kernel. Returns false when the step was skipped.
bool run_step(OptKind kind, std::vector<Row>& rows, const std::vector<GroupHP>& hps,
              const c10::optional<Tensor>& grad_scale, const c10::optional<Tensor>& found_inf) {
  const char* op = op_name(kind, hps.empty() ? GroupHP{} : hps[0]);
  for (const auto& hp : hps) check_hp(kind, hp);
  for (Row& r : rows) set_usage(kind, hps[r.group], r);
  const bool has_step = kind != OptKind::SGD;
  validate_rows(op, has_step, rows, grad_scale, found_inf);
  for (const Row& r : rows) {  // before any step count moves
    if (!hps[r.group].sr || !r.p.is_cuda() || r.p.scalar_type() != at::kBFloat16) continue;
    bool bf16_state = true;
    for (int s = 0; s < 3; ++s)
      if (r.use[s] && r.s[s].defined()) bf16_state = bf16_state && r.s[s].scalar_type() == at::kBFloat16;
    TORCH_CHECK(!bf16_state || cuda_compact_state_enabled(), op,
                ": stochastic rounding of bfloat16 parameters with bfloat16 state is not yet verified on CUDA in "
                "this version (FASTNN_CUDA_COMPACT_STATE=1 runs the unverified kernel)");
  }
  const bool inf_given = found_inf.has_value() && found_inf->defined();
  // Step counts on the device (capturable) are handled there: incremented now, and decremented
  // again by found_inf after the kernel (which skips every update when found_inf is set), with no
  // host synchronisation. Everything else decides on the host.
  bool device_steps = false;
  for (const Row& r : rows) device_steps = device_steps || (r.step.defined() && r.step.is_cuda());
  c10::optional<Tensor> device_inf;
  if (inf_given && found_inf->is_cuda() && device_steps) {
    device_inf = found_inf;
  } else if (inf_given && found_inf->item<double>() != 0.0) {
    return false;
  }
  for (Row& r : rows) {
    double step = 0.0;
    if (has_step) {
      if (r.step.is_cuda()) r.step.add_(1);
      else step = bump_step(r.step);
    }
    set_consts(kind, hps[r.group], r, step);
  }
  execute(op, kind, rows, grad_scale, device_inf, hps);
  if (device_inf)
    for (Row& r : rows)
      if (r.step.defined() && r.step.is_cuda()) r.step.sub_(*device_inf);
  return true;
}

// ---- the torch.library ops: lists in, per-group hyper-parameters as lists ----

std::vector<int64_t> group_index(const char* op, at::IntArrayRef group_sizes, int64_t n) {
  std::vector<int64_t> gi;
  gi.reserve(n);
  for (size_t g = 0; g < group_sizes.size(); ++g) {
    TORCH_CHECK(group_sizes[g] >= 0, op, ": negative group size");
    for (int64_t j = 0; j < group_sizes[g]; ++j) gi.push_back(int64_t(g));
  }
  TORCH_CHECK(int64_t(gi.size()) == n, op, ": group_sizes add up to ", gi.size(), " but ", n,
              " parameters were given");
  return gi;
}

// Builds rows from the op's tensor lists; a state list may be empty when no group uses it.
std::vector<Row> rows_from_lists(const char* op, TensorList params, TensorList grads,
                                 std::initializer_list<TensorList> states, TensorList steps,
                                 at::IntArrayRef group_sizes) {
  const int64_t n = params.size();
  auto gi = group_index(op, group_sizes, n);
  TORCH_CHECK(int64_t(grads.size()) == n, op, ": ", grads.size(), " gradients for ", n, " parameters");
  TORCH_CHECK(steps.empty() || int64_t(steps.size()) == n, op, ": ", steps.size(), " steps for ", n,
              " parameters");
  std::vector<Row> rows(n);
  int s = 0;
  for (TensorList l : states) {
    TORCH_CHECK(l.empty() || int64_t(l.size()) == n, op, ": a state list has ", l.size(), " tensors for ", n,
                " parameters");
    for (int64_t i = 0; i < int64_t(l.size()); ++i) rows[i].s[s] = l[i];
    ++s;
  }
  for (int64_t i = 0; i < n; ++i) {
    rows[i].p = params[i];
    rows[i].g = grads[i];
    rows[i].group = gi[i];
    rows[i].index = i;
    if (!steps.empty()) rows[i].step = steps[i];
  }
  return rows;
}

std::vector<GroupHP> group_hps(const char* op, size_t G, std::initializer_list<at::ArrayRef<double>> h,
                               std::initializer_list<const c10::List<bool>*> b) {
  std::vector<GroupHP> hps(G);
  int j = 0;
  for (auto l : h) {
    TORCH_CHECK(l.size() == G, op, ": a hyper-parameter list has ", l.size(), " entries for ", G, " groups");
    for (size_t g = 0; g < G; ++g) hps[g].h[j] = l[g];
    ++j;
  }
  j = 0;
  for (auto l : b) {
    TORCH_CHECK(l->size() == G, op, ": a flag list has ", l->size(), " entries for ", G, " groups");
    for (size_t g = 0; g < G; ++g) hps[g].b[j] = l->get(g);
    ++j;
  }
  return hps;
}

void adam_cpu(TensorList params, TensorList grads, TensorList exp_avgs, TensorList exp_avg_sqs,
              TensorList max_exp_avg_sqs, TensorList steps, at::IntArrayRef group_sizes, at::ArrayRef<double> lr,
              at::ArrayRef<double> beta1, at::ArrayRef<double> beta2, at::ArrayRef<double> weight_decay,
              at::ArrayRef<double> eps, c10::List<bool> amsgrad, c10::List<bool> maximize, bool decoupled,
              c10::List<bool> lr_f32, const c10::optional<Tensor>& grad_scale,
              const c10::optional<Tensor>& found_inf) {
  const char* op = decoupled ? "fastnn.optim.AdamW" : "fastnn.optim.Adam";
  auto rows = rows_from_lists(op, params, grads, {exp_avgs, exp_avg_sqs, max_exp_avg_sqs}, steps, group_sizes);
  auto hps = group_hps(op, group_sizes.size(), {lr, beta1, beta2, weight_decay, eps}, {&amsgrad, &maximize, &lr_f32});
  for (auto& hp : hps) hp.b[3] = decoupled;
  run_step(OptKind::Adam, rows, hps, grad_scale, found_inf);
}

void rmsprop_cpu(TensorList params, TensorList grads, TensorList square_avgs, TensorList grad_avgs,
                 TensorList momentum_buffers, TensorList steps, at::IntArrayRef group_sizes, at::ArrayRef<double> lr,
                 at::ArrayRef<double> alpha, at::ArrayRef<double> eps, at::ArrayRef<double> weight_decay,
                 at::ArrayRef<double> momentum, c10::List<bool> centered, c10::List<bool> maximize,
                 const c10::optional<Tensor>& grad_scale, const c10::optional<Tensor>& found_inf) {
  const char* op = "fastnn.optim.RMSprop";
  auto rows = rows_from_lists(op, params, grads, {square_avgs, grad_avgs, momentum_buffers}, steps, group_sizes);
  auto hps = group_hps(op, group_sizes.size(), {lr, alpha, eps, weight_decay, momentum}, {&centered, &maximize});
  run_step(OptKind::RMSprop, rows, hps, grad_scale, found_inf);
}

void sgd_cpu(TensorList params, TensorList grads, TensorList momentum_buffers, c10::List<bool> first_step,
             at::IntArrayRef group_sizes, at::ArrayRef<double> lr, at::ArrayRef<double> momentum,
             at::ArrayRef<double> dampening, at::ArrayRef<double> weight_decay, c10::List<bool> nesterov,
             c10::List<bool> maximize, const c10::optional<Tensor>& grad_scale,
             const c10::optional<Tensor>& found_inf) {
  const char* op = "fastnn.optim.SGD";
  auto rows = rows_from_lists(op, params, grads, {momentum_buffers}, {}, group_sizes);
  TORCH_CHECK(first_step.size() == rows.size() || first_step.size() == 0, op,
              ": first_step must have one entry per parameter");
  for (size_t i = 0; i < first_step.size(); ++i) rows[i].first = first_step.get(i);
  auto hps = group_hps(op, group_sizes.size(), {lr, momentum, dampening, weight_decay}, {&nesterov, &maximize});
  run_step(OptKind::SGD, rows, hps, grad_scale, found_inf);
}

void adagrad_cpu(TensorList params, TensorList grads, TensorList state_sums, TensorList steps,
                 at::IntArrayRef group_sizes, at::ArrayRef<double> lr, at::ArrayRef<double> lr_decay,
                 at::ArrayRef<double> weight_decay, at::ArrayRef<double> eps, c10::List<bool> maximize,
                 c10::List<bool> lr_f32, const c10::optional<Tensor>& grad_scale,
                 const c10::optional<Tensor>& found_inf) {
  const char* op = "fastnn.optim.Adagrad";
  auto rows = rows_from_lists(op, params, grads, {state_sums}, steps, group_sizes);
  auto hps = group_hps(op, group_sizes.size(), {lr, lr_decay, weight_decay, eps}, {&maximize, &lr_f32});
  run_step(OptKind::Adagrad, rows, hps, grad_scale, found_inf);
}

OptKind parse_kind(const std::string& k) {
  if (k == "adam") return OptKind::Adam;
  if (k == "rmsprop") return OptKind::RMSprop;
  if (k == "sgd") return OptKind::SGD;
  if (k == "adagrad") return OptKind::Adagrad;
  TORCH_CHECK_VALUE(false, "fastnn.optim: unknown optimizer kind '", k, "'");
}

}  // namespace

// ---- OptimizerPlan ----

OptimizerPlan::OptimizerPlan(const std::string& kind, std::vector<Tensor> params, std::vector<int64_t> group,
                             const std::vector<std::vector<c10::optional<Tensor>>>& states,
                             const std::vector<c10::optional<Tensor>>& steps, std::vector<bool> first)
    : kind_(int(parse_kind(kind))), params_(std::move(params)), group_(std::move(group)), first_(std::move(first)) {
  const size_t n = params_.size();
  TORCH_CHECK(group_.size() == n && states.size() <= 6 && first_.size() == n && (steps.empty() || steps.size() == n),
              "fastnn.optim: inconsistent plan");
  auto unwrap = [](const std::vector<c10::optional<Tensor>>& l) {
    std::vector<Tensor> out;
    out.reserve(l.size());
    for (const auto& t : l) out.push_back(t.has_value() ? *t : Tensor());
    return out;
  };
  for (size_t s = 0; s < states.size(); ++s) {
    auto& dst = s < 3 ? states_[s] : scales_[s - 3];
    dst = unwrap(states[s]);
    TORCH_CHECK(dst.empty() || dst.size() == n, "fastnn.optim: inconsistent plan");
  }
  steps_ = unwrap(steps);
}

std::vector<int64_t> OptimizerPlan::fresh() const {
  std::vector<int64_t> out;
  for (size_t i = 0; i < first_.size(); ++i)
    if (first_[i]) out.push_back(int64_t(i));
  return out;
}

std::vector<int64_t> OptimizerPlan::step(const std::vector<std::vector<double>>& h,
                                         const std::vector<std::vector<bool>>& b,
                                         const c10::optional<Tensor>& grad_scale,
                                         const c10::optional<Tensor>& found_inf,
                                         const std::vector<std::vector<int64_t>>& sr) {
  const OptKind kind = OptKind(kind_);
  TORCH_CHECK(h.size() == b.size() && (sr.empty() || sr.size() == h.size()),
              "fastnn.optim: inconsistent hyper-parameters");
  std::vector<GroupHP> hps(h.size());
  for (size_t g = 0; g < h.size(); ++g) {
    TORCH_CHECK(h[g].size() <= 5 && b[g].size() <= 4, "fastnn.optim: too many hyper-parameters");
    std::copy(h[g].begin(), h[g].end(), hps[g].h);
    std::copy(b[g].begin(), b[g].end(), hps[g].b);
    if (!sr.empty() && !sr[g].empty()) {
      TORCH_CHECK(sr[g].size() == 2, "fastnn.optim: stochastic rounding takes {seed, step} per group");
      hps[g].sr = true;
      hps[g].sr_seed = uint64_t(sr[g][0]);
      hps[g].sr_step = uint64_t(sr[g][1]);
    }
  }
  std::vector<Row> rows;
  rows.reserve(params_.size());
  std::vector<int64_t> missing;  // params with a gradient whose state the caller must create first
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& g = params_[i].grad();
    if (!g.defined()) continue;  // torch skips parameters without gradients
    Row r;
    r.p = params_[i];
    r.g = g;
    r.group = group_[i];
    r.index = int64_t(i);
    TORCH_CHECK(r.group >= 0 && r.group < int64_t(hps.size()), "fastnn.optim: inconsistent plan");
    r.first = first_[i];
    for (int s = 0; s < 3; ++s) {
      if (!states_[s].empty()) r.s[s] = states_[s][i];
      if (!scales_[s].empty()) r.q[s] = scales_[s][i];
    }
    if (!steps_.empty()) r.step = steps_[i];
    set_usage(kind, hps[r.group], r);
    bool ok = kind == OptKind::SGD || r.step.defined();
    for (int s = 0; s < 3; ++s)
      ok = ok && (!r.use[s] || (r.s[s].defined() && (r.s[s].scalar_type() != at::kByte || r.q[s].defined())));
    if (!ok) missing.push_back(int64_t(i));
    rows.push_back(std::move(r));
  }
  if (!missing.empty() || rows.empty()) return missing;
  if (run_step(kind, rows, hps, grad_scale, found_inf))
    for (size_t i = 0; i < first_.size(); ++i)
      if (params_[i].grad().defined()) first_[i] = false;
  return missing;
}

// ---- 8-bit state conversions (checkpoints, initial values): the kernels' codec, on the host ----

std::tuple<Tensor, Tensor> q8_quantize(const Tensor& values, bool is_signed) {
  TORCH_CHECK(values.is_floating_point() && !values.is_complex(), "fastnn.optim: 8-bit state is quantized from ",
              "floating-point values, got ", values.scalar_type());
  const Tensor x = values.detach().to(at::kCPU, at::kFloat).contiguous();
  const int64_t n = x.numel(), B = optim_rules::kQ8Block;
  Tensor codes = at::empty(values.sizes(), x.options().dtype(at::kByte));
  Tensor scales = at::empty({(n + B - 1) / B}, x.options());
  const float* v = x.data_ptr<float>();
  uint8_t* c = codes.data_ptr<uint8_t>();
  float* sc = scales.data_ptr<float>();
  const KeepSubnormals subnormals_kept;
  for (int64_t b0 = 0; b0 < n; b0 += B)
    sc[b0 / B] = optim_rules::q8_encode_block(is_signed, v + b0, std::min(B, n - b0), c + b0);
  return {codes.to(values.device()), scales.to(values.device())};
}

Tensor q8_dequantize(const Tensor& codes, const Tensor& scales, bool is_signed) {
  const int64_t n = codes.numel(), B = optim_rules::kQ8Block;
  TORCH_CHECK(codes.scalar_type() == at::kByte && scales.scalar_type() == at::kFloat &&
                  scales.numel() == (n + B - 1) / B,
              "fastnn.optim: 8-bit state is uint8 codes with one float32 scale per block of ", B,
              " values; got ", codes.scalar_type(), " codes of ", n, " values and ", scales.scalar_type(),
              " scales of ", scales.numel());
  const Tensor c = codes.detach().cpu().contiguous(), s = scales.detach().cpu().contiguous();
  Tensor out = at::empty(codes.sizes(), s.options());
  const uint8_t* cp = c.data_ptr<uint8_t>();
  const float* sp = s.data_ptr<float>();
  float* o = out.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i)
    o[i] = sp[i / B] * (is_signed ? optim_rules::q8_decode<true>(cp[i]) : optim_rules::q8_decode<false>(cp[i]));
  return out.to(codes.device());
}

TORCH_LIBRARY_IMPL(fastnn, CPU, m) {
  m.impl("adam_", &adam_cpu);
  m.impl("rmsprop_", &rmsprop_cpu);
  m.impl("sgd_", &sgd_cpu);
  m.impl("adagrad_", &adagrad_cpu);
}

}  // namespace fastnn
