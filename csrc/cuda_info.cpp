// Compiled with -DFASTNN_WITH_CUDA exactly when setup.py builds the CUDA sources.
bool fastnn_built_with_cuda() {
#ifdef FASTNN_WITH_CUDA
  return true;
#else
  return false;
#endif
}
