#include "worker/engine/sgemm_peak.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "kernels/cpu/peak.h"
#include "nlohmann/json.hpp"
#include "worker/core/bounded_input.h"

namespace tern::engine {
namespace {

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon != std::string::npos)
      return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
  }
  return "unknown CPU";
}

nlohmann::json ReadJson(const std::string& path) {
  auto text = ReadBoundedFile(path, "sgemm peak cache", 1 << 20);
  if (!text.ok()) return nlohmann::json::object();
  auto j = ParseJsonBounded(*text, path, 8);
  return j.ok() && j->is_object() ? *j : nlohmann::json::object();
}

}  // namespace

std::string PeakCachePath() {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg && *xdg) return absl::StrCat(xdg, "/tern/sgemm_peak.json");
  const char* home = std::getenv("HOME");
  if (home && *home) return absl::StrCat(home, "/.cache/tern/sgemm_peak.json");
  return "";
}

std::string PeakCacheKey(int threads) { return absl::StrCat(CpuModel(), " x", threads); }

absl::StatusOr<double> ReadCachedPeak(const std::string& path, const std::string& key) {
  const nlohmann::json j = ReadJson(path);
  auto it = j.find(key);
  if (it == j.end() || !it->is_object() || !it->contains("gflops") ||
      !(*it)["gflops"].is_number() || (*it)["gflops"].get<double>() <= 0)
    return absl::NotFoundError(absl::StrCat(path, ": no sgemm peak for \"", key, "\""));
  return (*it)["gflops"].get<double>();
}

absl::Status WriteCachedPeak(const std::string& path, const std::string& key, double gflops) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  if (ec) return absl::InternalError(absl::StrCat(path, ": ", ec.message()));
  nlohmann::json j = ReadJson(path);
  j[key] = {{"gflops", gflops}};
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    if (!out.flush()) return absl::InternalError(absl::StrCat(tmp, ": write failed"));
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return absl::InternalError(absl::StrCat(path, ": rename failed"));
  }
  return absl::OkStatus();
}

SgemmPeak ResolveSgemmPeak(int threads, double given_gflops) {
  if (given_gflops > 0) return {given_gflops, "flag", ""};
  double env = 0;
  if (const char* e = std::getenv("TERN_PEAK_GFLOPS"); e && absl::SimpleAtod(e, &env) && env > 0)
    return {env, "env", ""};
  const std::string path = PeakCachePath();
  const std::string key = PeakCacheKey(threads);
  if (!path.empty()) {
    if (auto cached = ReadCachedPeak(path, key); cached.ok()) return {*cached, "cached", path};
  }
  SgemmPeak p{kernels::MeasureSgemmPeakGflops(threads), "measured", ""};
  if (!path.empty() && WriteCachedPeak(path, key, p.gflops).ok()) p.cache = path;
  return p;
}

}  // namespace tern::engine
