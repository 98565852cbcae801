// The avx512_bf16 optimizer kernels of SGD, apart from avx512_bf16.cpp so the build compiles the kinds in parallel.
#include "isa_avx512_bf16.h"
#include "../optim/optim_cpu_kernels.h"
FASTNN_OPTIM_KIND_INSTANCES(SGD)
