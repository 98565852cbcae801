// The avx512 optimizer kernels of RMSprop, apart from avx512.cpp so the build compiles the kinds in parallel.
#include "isa_avx512.h"
#include "../optim/optim_cpu_kernels.h"
FASTNN_OPTIM_KIND_INSTANCES(RMSprop)
