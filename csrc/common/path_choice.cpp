#include "path_choice.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/version.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <sys/stat.h>
#include <tuple>

#include "../cpu_isa/cpu_isa.h"

namespace fastnn {
namespace {

// Calibration: rounds of every path in turn (machine noise falls on all alike); in each round a path
// runs once untimed (its data back in cache, as in a training loop) and then for at least
// kMinRoundSeconds; the median per-call time of the rounds decides. (5 rounds of 1 ms picked the
// slower path of a 340 vs 450 us pair in 1 of 4 fresh processes on a shared 2-core Zen 4.)
constexpr int kRounds = 7;
constexpr double kMinRoundSeconds = 4e-3;

std::vector<std::string> split(const std::string& s, char sep);

std::vector<std::string> parse_spec(const std::string& spec) {
  static const char* known[] = {"tiled", "layers", "direct", "gemm", "gemm_f32"};
  std::vector<std::string> forced;
  if (spec == "auto") return forced;
  for (const std::string& name : split(spec, ',')) {
    if (std::find_if(std::begin(known), std::end(known), [&](const char* k) { return name == k; }) == std::end(known))
      throw std::invalid_argument("fastnn.set_cpu_path: unknown path '" + name +
                                  "' (expected 'auto' or a comma-separated list of: tiled, layers, direct, gemm, gemm_f32)");
    forced.push_back(name);
  }
  return forced;
}

struct Choice {
  int path;
  std::string name, reason;
};

struct State {
  std::recursive_mutex mu;  // a calibration may run ops that choose their own paths
  std::map<std::string, Choice> choices;
  std::map<std::string, std::pair<int, std::string>> disk;  // this machine's lines of the cache file: path, reason
  bool disk_loaded = false;
  std::vector<std::string> forced;
  std::string env_error;  // a bad FASTNN_CPU_PATH, reported when an op asks (not at import)
};

State& state() {
  static State* s = [] {
    auto* st = new State();
    if (const char* env = std::getenv("FASTNN_CPU_PATH")) {
      try {
        st->forced = parse_spec(env);
      } catch (const std::invalid_argument& e) {
        st->env_error = std::string("FASTNN_CPU_PATH: ") + e.what();
      }
    }
    return st;
  }();
  return *s;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep))
    if (!item.empty()) out.push_back(item);
  return out;
}

// What makes a measurement on this machine valid: the CPU, torch, and this build of the kernels.
std::string machine_key() {
  static const std::string key = [] {
    std::string model = "unknown-cpu";
    std::ifstream f("/proc/cpuinfo");
    std::string line, family, mod;
    while (std::getline(f, line)) {
      auto value = [&] { return line.substr(line.find(':') + 1); };
      if (line.rfind("model name", 0) == 0 && model == "unknown-cpu") model = value();
      else if (line.rfind("cpu family", 0) == 0 && family.empty()) family = value();
      else if (line.rfind("model", 0) == 0 && line.rfind("model name", 0) != 0 && mod.empty()) mod = value();
    }
    std::string k = model + " f" + family + " m" + mod + " torch " + TORCH_VERSION + " fastnn-build " + __DATE__ +
                    " " + __TIME__;
    for (char& c : k)
      if (c == '\t' || c == '\n') c = ' ';
    return k;
  }();
  return key;
}

std::string cache_dir() {
  if (const char* d = std::getenv("FASTNN_CACHE_DIR")) return d;  // "" disables the disk cache
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/fastnn";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/fastnn";
  return "";
}

void load_disk(State& s) {
  if (s.disk_loaded) return;
  s.disk_loaded = true;
  const std::string file = cpu_path_cache_file();
  if (file.empty()) return;
  std::ifstream f(file);
  std::string line;
  const std::string mk = machine_key();
  while (std::getline(f, line)) {
    // machine \t key \t path index \t reason
    const auto parts = split(line, '\t');
    if (parts.size() != 4 || parts[0] != mk) continue;
    try {
      s.disk[parts[1]] = {std::stoi(parts[2]), parts[3]};
    } catch (const std::exception&) {
      // A damaged line: measured again.
    }
  }
}

void save_disk(const std::string& key, const Choice& c) {
  const std::string file = cpu_path_cache_file();
  if (file.empty()) return;
  const std::string dir = file.substr(0, file.rfind('/'));
  // mkdir -p of the cache directory (errors surface as a failed open below, which is harmless).
  for (size_t i = 1; i <= dir.size(); ++i)
    if (i == dir.size() || dir[i] == '/') ::mkdir(dir.substr(0, i).c_str(), 0755);
  std::string reason = c.reason;
  for (char& ch : reason)
    if (ch == '\t' || ch == '\n') ch = ' ';
  // One short line per write, in append mode: concurrent processes do not interleave within it.
  if (FILE* f = std::fopen(file.c_str(), "a")) {
    std::fprintf(f, "%s\t%s\t%d\t%s\n", machine_key().c_str(), key.c_str(), c.path, reason.c_str());
    std::fclose(f);
  }
}

double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Times every path at `rows` rows and returns the fastest, with the times as its reason. On a device the
// calls of a round are queued back to back and the round ends when the device has finished them (the
// time per call is then the device's or the host's, whichever bounds a training loop).
Choice measure(const PathQuery& q, int64_t rows) {
  const int n = int(q.paths.size());
  auto sync = [&] {
    if (q.sync) q.sync();
  };
  // Calibration data needs no autograd and must not record anything.
  at::NoGradGuard no_grad;
  c10::impl::ExcludeDispatchKeyGuard no_autograd(c10::autograd_dispatch_keyset);
  for (int p = 0; p < n; ++p) q.run(p, rows);  // warm-up (allocations, caches, lazy set-up)
  std::vector<std::vector<double>> per_call(n);
  for (int r = 0; r < kRounds; ++r)
    for (int p = 0; p < n; ++p) {
      q.run(p, rows);
      sync();
      int calls = 0;
      const double t0 = seconds_now();
      double t = t0;
      do {
        q.run(p, rows);
        ++calls;
        t = seconds_now();
      } while (t - t0 < kMinRoundSeconds);
      if (q.sync) {
        sync();
        t = seconds_now();
      }
      per_call[p].push_back((t - t0) / calls);
    }
  std::vector<double> med(n);
  for (int p = 0; p < n; ++p) {
    auto& v = per_call[p];
    std::sort(v.begin(), v.end());
    med[p] = v[v.size() / 2];
  }
  const int best = int(std::min_element(med.begin(), med.end()) - med.begin());
  std::ostringstream why;
  why.setf(std::ios::fixed);
  why.precision(1);
  why << "measured on this " << (q.device.empty() ? "machine" : "device") << ": ";
  for (int p = 0; p < n; ++p) why << (p ? " vs " : "") << q.paths[p] << " " << med[p] * 1e6 << " us";
  if (q.device.empty())
    why << " per " << q.work << " (" << at::get_num_threads() << " threads)";
  else
    why << " per " << q.work << " at " << rows << " rows (" << q.device << ")";
  return {best, q.paths[best], why.str()};
}

}  // namespace

int64_t path_batch_class(int64_t M, int64_t max_class) {
  int64_t c = 1;
  while (c < M && c < max_class) c <<= 1;
  return c;
}

at::Generator path_generator() { return at::make_generator<at::CPUGeneratorImpl>(0x5eed); }

int choose_path(const PathQuery& q, std::string* why) {
  auto answer = [&](int p, const std::string& reason) {
    if (why) *why = reason;
    return p;
  };
  State& s = state();
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  if (!s.env_error.empty()) throw std::invalid_argument(s.env_error);
  static const std::vector<std::string> kNone;
  for (const std::string& f : q.device.empty() ? s.forced : kNone)  // set_cpu_path forces CPU paths only
    for (size_t p = 0; p < q.paths.size(); ++p)
      if (f == q.paths[p])
        return why ? answer(int(p), "forced by fastnn.set_cpu_path / FASTNN_CPU_PATH ('" + f + "')") : int(p);
  if (q.batch == 0) return why ? answer(q.fixed_path, std::string("empty batch: ") + q.fixed_reason) : q.fixed_path;
  if (at::globalContext().deterministicAlgorithms())
    return why ? answer(q.fixed_path, std::string("torch.use_deterministic_algorithms(True): the fixed rule, ") +
                                          q.fixed_reason)
               : q.fixed_path;
  // Not keyed by the thread count: a choice holds for every thread count, so results stay the same
  // bits whatever the thread count (the measurement's thread count is in its reason).
  const int64_t rows = path_batch_class(q.batch, q.max_batch_class);
  const std::string key = std::string(q.op) + "|" + q.dtype + " b" + std::to_string(rows) + " " + q.shape +
                          (q.device.empty() ? "|isa=" + cpu_isa() : "|" + q.device);
  auto it = s.choices.find(key);
  if (it == s.choices.end()) {
    load_disk(s);
    auto d = s.disk.find(key);
    Choice c;
    if (d != s.disk.end() && d->second.first >= 0 && d->second.first < int(q.paths.size())) {
      c = {d->second.first, q.paths[d->second.first], d->second.second + " (kept in " + cpu_path_cache_file() + ")"};
    } else if (!q.can_measure) {
      // Kept for this process only (not on disk): a later process measures.
      c = {q.fixed_path, q.paths[q.fixed_path],
           std::string("first seen while the device could not be timed (a CUDA graph being captured): the "
                       "fixed rule, ") + q.fixed_reason};
    } else {
      c = measure(q, rows);
      save_disk(key, c);
    }
    it = s.choices.emplace(key, std::move(c)).first;
  }
  return why ? answer(it->second.path, it->second.reason) : it->second.path;
}

namespace {
std::atomic<uint64_t> g_generation{0};
}  // namespace

void bump_path_choice_generation() { g_generation.fetch_add(1, std::memory_order_acq_rel); }

uint64_t cpu_path_context() {
  return g_generation.load(std::memory_order_acquire) * 4 + (at::autocast::is_autocast_enabled(at::kCPU) ? 2 : 0) +
         (at::globalContext().deterministicAlgorithms() ? 1 : 0);
}

void set_cpu_path(const std::string& spec) {
  std::vector<std::string> forced = parse_spec(spec);
  State& s = state();
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  s.forced = std::move(forced);
  s.env_error.clear();
  bump_path_choice_generation();
}

std::string get_cpu_path() {
  State& s = state();
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  std::string out;
  for (const auto& f : s.forced) out += (out.empty() ? "" : ",") + f;
  return out.empty() ? "auto" : out;
}

std::vector<std::tuple<std::string, std::string, std::string>> cpu_path_choices() {
  State& s = state();
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  std::vector<std::tuple<std::string, std::string, std::string>> out;
  for (const auto& [k, c] : s.choices) out.emplace_back(k, c.name, c.reason);
  return out;
}

void clear_cpu_path_choices() {
  State& s = state();
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  s.choices.clear();
  s.disk.clear();
  s.disk_loaded = false;
  bump_path_choice_generation();
}

std::string cpu_path_cache_file() {
  const std::string dir = cache_dir();
  return dir.empty() ? "" : dir + "/cpu_paths.tsv";
}

}  // namespace fastnn
