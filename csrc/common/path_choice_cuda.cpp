// The CUDA side of a path choice (path_choice.h): what a query needs to be timed on a GPU.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "path_choice.h"

namespace fastnn {

void measure_on_cuda(PathQuery& q, const at::Tensor& t) {
  const auto* prop = at::cuda::getDeviceProperties(t.device().index());
  // A choice measured on one GPU model (or MIG slice) is not another's.
  q.device = std::string("cuda: ") + prop->name + ", sm_" + std::to_string(prop->major) +
             std::to_string(prop->minor) + ", " + std::to_string(prop->multiProcessorCount) + " SMs";
  const c10::cuda::CUDAStream stream = at::cuda::getCurrentCUDAStream(t.device().index());
  q.sync = [stream] { stream.synchronize(); };
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream.stream(), &capture));
  q.can_measure = capture == cudaStreamCaptureStatusNone;
}

}  // namespace fastnn
