// The base optimizer kernels of RMSprop, apart from base.cpp so the build compiles the kinds in parallel.
#include "isa_base.h"
#include "../optim/optim_cpu_kernels.h"
FASTNN_OPTIM_KIND_INSTANCES(RMSprop)
