// CUDA backend of the fused optimizers: optim.cpp validates and stages the tensors, this runs the
// multi-tensor kernels (optim_cuda_kernels.cu) on the current stream, so a step can be captured in
// a CUDA graph when the step counts live on the device (capturable).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "optim.h"
#include "optim_cuda.h"

namespace fastnn {
namespace {

const float* device_scalar(const c10::optional<at::Tensor>& t, const at::Device& dev, at::Tensor& holder) {
  if (!t.has_value() || !t->defined()) return nullptr;
  holder = t->to(dev, at::kFloat).contiguous();
  return holder.data_ptr<float>();
}

void run_cuda(int kind, int dtype, int sdtype, bool sr, const std::vector<OptSlot>& slots,
              const c10::optional<at::Tensor>& grad_scale, const c10::optional<at::Tensor>& found_inf) {
  if (slots.empty()) return;
  const at::Device dev(at::kCUDA, at::cuda::current_device());
  at::Tensor gs_holder, fi_holder;
  const float* gs = device_scalar(grad_scale, dev, gs_holder);
  const float* fi = device_scalar(found_inf, dev, fi_holder);
  void* stream = at::cuda::getCurrentCUDAStream().stream();
  if (sdtype == dtype && !sr)
    cuda_optimizer_step(OptKind(kind), dtype, slots.data(), int64_t(slots.size()), gs, fi, stream);
  else
    TORCH_CHECK(
        cuda_optimizer_step_compact(OptKind(kind), dtype, sdtype, sr, slots.data(), int64_t(slots.size()), gs, fi,
                                    stream),
        "fastnn.optim: no CUDA kernel for parameter dtype code ", dtype, " with state dtype code ", sdtype,
        sr ? " rounded stochastically" : "", " (nothing was updated)");
}

struct Register {
  Register() { g_cuda_optimizer_exec = &run_cuda; }
} register_cuda_backend;

}  // namespace
}  // namespace fastnn
