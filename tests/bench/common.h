// What the benchmarks share: the median of their timed runs, a steady-clock stopwatch and the
// JSON line each result prints. Header-only; the target tern_bench_common (tests/bench) adds
// its include path and nlohmann_json. Model flags: model_flags.h.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "nlohmann/json.hpp"

namespace tern::bench {

// The median: the middle value, the mean of the middle two for an even count, 0 when empty.
inline double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// Wall time since construction (or the last Restart) on the steady clock.
class Stopwatch {
 public:
  using Clock = std::chrono::steady_clock;
  Stopwatch() : t0_(Clock::now()) {}
  void Restart() { t0_ = Clock::now(); }
  double Seconds() const { return std::chrono::duration<double>(Clock::now() - t0_).count(); }
  double Ms() const {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0_).count();
  }

 private:
  Clock::time_point t0_;
};

// One result: the JSON object on a line of its own on stdout, flushed (a long run's lines show
// as they come).
inline void PrintJsonLine(const nlohmann::json& j) {
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

}  // namespace tern::bench
