// Which of an op's CPU code paths runs for a shape class, chosen by measurement on this machine.
//
// The first time a shape class is seen (an op-built key: widths, dtype, activations; and the batch class),
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

#include <ATen/core/Generator.h>

namespace fastnn {

struct CpuPathQuery {
  const char* op;                  // "fastnn.mlp"
  std::vector<const char*> paths;  // the op's path names, e.g. {"tiled", "layers"}
  const char* dtype;               // the shape class: dtype, batch class (of `batch` rows), the rest
  int64_t batch;
  std::string shape;               // widths, activations, biases
  int fixed_path;                  // what the fixed rule says (deterministic mode, empty batches)
  const char* fixed_reason;
  // Runs path p once on `rows` rows of data of the shape class (the calibration's workload).
  std::function<void(int p, int64_t rows)> run;
};

// The path index for q: forced, the fixed rule (empty batch, deterministic mode), cached, or measured
// now and cached. why, when given, receives the reason (e.g. "measured on this machine: tiled 76.6 us
// vs layers 147.4 us per fwd+bwd (2 threads)"); hot callers pass none and build no string.
int choose_cpu_path(const CpuPathQuery& q, std::string* why = nullptr);

// Batch class of M rows: the next power of two (1 for M <= 1), capped where larger batches no longer
// change which path wins; the calibration runs at that many rows.
int64_t cpu_batch_class(int64_t M);

// A fresh generator with a fixed seed for calibration data: the caller's random stream is not touched.
at::Generator cpu_path_generator();

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
