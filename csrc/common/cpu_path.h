// Which of an op's CPU code paths runs for a shape class, chosen by measurement on this machine.
//
// The first time a shape class is seen (an op-built key: widths, dtype, activations, batch class),
// the candidates are timed against each other on data of that shape and the faster is kept for the
// rest of the process, and in an on-disk cache (keyed by CPU model, torch version, the extension
// build and kernel table) so that later runs on this machine make the same choice and compute the
// same bits. The thread count is deliberately not part of the key: a choice holds for every thread
// count, so results are the same bits for any thread count. No instruction-set name or other CPU's
// numbers enter the choice.
//
// Overrides, in order: a path forced by fastnn.set_cpu_path / FASTNN_CPU_PATH (names an op's path,
// e.g. "layers"); torch.use_deterministic_algorithms(True), under which every op takes its fixed,
// documented rule instead of a measurement.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

namespace fastnn {

struct CpuPathChoice {
  int path;            // index into the op's path names
  std::string reason;  // e.g. "measured: tiled 212 us vs layers 250 us (batch class 128)"
};

struct CpuPathQuery {
  const char* op;                  // "fastnn.mlp"
  std::vector<const char*> paths;  // the op's path names, e.g. {"tiled", "layers"}
  std::string key;                 // the shape class (the op adds nothing else: ISA and threads are added here)
  int fixed_path;                  // what the fixed rule says (deterministic mode, empty batches)
  std::string fixed_reason;
  // Runs path p once on data of the shape class (the calibration's workload).
  std::function<void(int p)> run;
};

// The choice for q: forced, fixed, cached or measured now (and cached).
CpuPathChoice choose_cpu_path(const CpuPathQuery& q);

// The fixed rule's answer (no measurement, no cache), for callers that must not calibrate.
inline CpuPathChoice fixed_cpu_path(const CpuPathQuery& q) { return {q.fixed_path, q.fixed_reason}; }

// Batch class of M rows: the next power of two (1 for M <= 1), capped where larger batches no longer
// change which path wins; the calibration runs at that many rows.
int64_t cpu_batch_class(int64_t M);

// Forcing: "" or "auto" measures again; otherwise a comma-separated list of path names, each op
// taking the one that names one of its paths. Throws std::invalid_argument on an unknown name.
void set_cpu_path(const std::string& spec);
std::string get_cpu_path();
// Every choice made so far in this process: (op/key, path, reason).
std::vector<std::tuple<std::string, std::string, std::string>> cpu_path_choices();
// Forget the in-process choices (the disk cache stays): for tests and benchmarks.
void clear_cpu_path_choices();
// The on-disk cache file ("" when disabled by FASTNN_CACHE_DIR="").
std::string cpu_path_cache_file();

}  // namespace fastnn
