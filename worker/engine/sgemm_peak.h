// The sgemm peak MFU is computed against: given (--peak-gflops, TERN_PEAK_GFLOPS), or measured
// once per host and thread count and cached in a small JSON file.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace tern::engine {

struct SgemmPeak {
  double gflops = 0;   // per rank (`threads` threads)
  std::string source;  // "flag", "env", "cached" or "measured"
  std::string cache;   // the cache file read or written; empty if none
};

// $XDG_CACHE_HOME/tern/sgemm_peak.json, else $HOME/.cache/tern/sgemm_peak.json ("" if neither).
std::string PeakCachePath();
// "<CPU model name> x<threads>": the cache key (the same CPU and thread count, the same peak).
std::string PeakCacheKey(int threads);

// The cached peak under `key` in `path`; NOT_FOUND when absent.
absl::StatusOr<double> ReadCachedPeak(const std::string& path, const std::string& key);
// Adds or replaces `key` in `path` (created with its folder; written atomically).
absl::Status WriteCachedPeak(const std::string& path, const std::string& key, double gflops);

// `given_gflops` > 0 wins ("flag"), then $TERN_PEAK_GFLOPS ("env"), then the cache ("cached"),
// else a measurement now ("measured"; cached for the next run when the file is writable).
SgemmPeak ResolveSgemmPeak(int threads, double given_gflops);

}  // namespace tern::engine
