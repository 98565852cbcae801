// Which of an op's code paths runs for a shape class, chosen by measurement on the machine (CPU) or
// the device (CUDA) that runs it.
//
// The first time a shape class is seen (an op-built key: widths, dtype, activations; the batch class;
// the device where it is not the CPU), the candidates are timed against each other on data of that
// shape and the faster is kept for the rest of the process, and in an on-disk cache (keyed by CPU
// model, torch version, the extension build and kernel table) so that later runs on this machine make
// the same choice and compute the same bits. The thread count is deliberately not part of the key: a
// choice holds for every thread count, so results are the same bits for any thread count. No
// instruction-set name or other machine's numbers enter the choice.
//
// Overrides, in order: for CPU queries, a path forced by fastnn.set_cpu_path / FASTNN_CPU_PATH (names
// an op's path, e.g. "layers"; CUDA ops have their own force switches, e.g. FASTNN_MLP_FUSED, applied
// before they ask); torch.use_deterministic_algorithms(True), under which every op takes its fixed,
// documented rule instead of a measurement; and a device that cannot be timed now (a CUDA graph being
// captured), where the fixed rule is taken and kept as the choice, so that the captured graph and
// later eager calls run the same path.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

namespace fastnn {

constexpr int64_t kMaxBatchClass = 4096;  // PathQuery::max_batch_class unless the op sets another

struct PathQuery {
  const char* op;                  // "fastnn.mlp"
  std::vector<const char*> paths;  // the op's path names, e.g. {"tiled", "layers"}
  const char* dtype;               // the shape class: dtype, batch class (of `batch` rows), the rest
  int64_t batch;
  std::string shape;               // widths, activations, biases
  int fixed_path;                  // what the fixed rule says (deterministic mode, empty batches)
  const char* fixed_reason;
  // Runs path p once on `rows` rows of data of the shape class (the calibration's workload), and its
  // name in the reason: a forward and backward, or for a call with nothing recorded the forward alone.
  std::function<void(int p, int64_t rows)> run;
  const char* work = "fwd+bwd";
  // A device other than the CPU: its description (e.g. "cuda: NVIDIA H200, sm_90, 132 SMs") enters the
  // key; sync() waits for the work queued on it before the clock is read; can_measure is false while
  // nothing may be timed (a CUDA graph being captured).
  std::string device;
  std::function<void()> sync;
  bool can_measure = true;
  int64_t max_batch_class = kMaxBatchClass;  // batches beyond it are timed (and keyed) at this many rows
};

// CUDA builds (path_choice_cuda.cpp): q measures on t's device: the GPU model and SM count enter the key,
// a round is timed up to when the current stream has finished it, and nothing is timed while that stream
// is capturing a CUDA graph (the fixed rule is taken and kept).
void measure_on_cuda(PathQuery& q, const at::Tensor& t);

// The path index for q: forced, the fixed rule (empty batch, deterministic mode, nothing timeable),
// cached, or measured now and cached. why, when given, receives the reason (e.g. "measured on this
// machine: tiled 76.6 us vs layers 147.4 us per fwd+bwd (2 threads)"); hot callers pass none and build
// no string.
int choose_path(const PathQuery& q, std::string* why = nullptr);

// Batch class of M rows: the next power of two (1 for M <= 1), capped at max_class (where larger
// batches no longer change which path wins); the calibration runs at that many rows.
int64_t path_batch_class(int64_t M, int64_t max_class);

// A fresh CPU generator with a fixed seed for calibration data (moved to the device where it is not the
// CPU): the caller's random stream is not touched.
at::Generator path_generator();

// Forcing: "" or "auto" measures again; otherwise a comma-separated list of path names, each op
// taking the one that names one of its paths. Throws std::invalid_argument on an unknown name.
void set_cpu_path(const std::string& spec);
std::string get_cpu_path();
// Every choice made so far in this process: (op/key, path, reason).
std::vector<std::tuple<std::string, std::string, std::string>> cpu_path_choices();
// Forget the in-process choices (the disk cache stays): for tests and benchmarks.
void clear_cpu_path_choices();
// Called whenever an earlier answer of choose_path may no longer hold (forcing, forgetting, switching the
// CPU kernel table).
void bump_path_choice_generation();
// A number that changes whenever an earlier CPU answer may no longer hold: those changes, plus autocast
// and deterministic mode. Callers that memoize answers (fastnn.nn.FusedSequential) key them on it.
uint64_t cpu_path_context();
// For ops that ask every call (fastnn::linear_act, forward and backward): the answers this thread got
// lately, keyed by what the op's shape class is made of (packed into key) and valid while
// cpu_path_context() is unchanged. A hit skips building the query's strings, lists and lock (about
// half a microsecond). ask() is the full question (choose_path); callers send empty batches and
// requests for a reason straight to it.
template <class Ask>
int remembered_cpu_path(const std::array<int64_t, 4>& key, Ask&& ask) {
  struct Slot {
    uint64_t context = 0;  // cpu_path_context() + 1; 0: empty
    std::array<int64_t, 4> key{};
    int path = 0;
  };
  constexpr int kSlots = 8;
  thread_local Slot slots[kSlots];
  thread_local int next = 0;
  const uint64_t context = cpu_path_context() + 1;
  for (const Slot& s : slots)
    if (s.context == context && s.key == key) return s.path;
  const int path = ask();
  slots[next] = {context, key, path};
  next = (next + 1) % kSlots;
  return path;
}
// The on-disk cache file ("" when disabled by FASTNN_CACHE_DIR="").
std::string cpu_path_cache_file();

}  // namespace fastnn
