#include "worker/core/run_text.h"

#include <spdlog/fmt/fmt.h>

#include <cmath>

namespace tern {
namespace {

using nlohmann::json;

double Num(const json& j, const char* key, double fallback = 0) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : fallback;
}

std::string Str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// "8s", "3m05s", "1h02m".
std::string Duration(double s) {
  if (!std::isfinite(s) || s < 0) s = 0;
  const long t = std::lround(s);
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

std::string Bytes(double b) {
  if (b >= 1024.0 * 1024 * 1024) return fmt::format("{:.2f} GiB", b / (1024.0 * 1024 * 1024));
  if (b >= 1024.0 * 1024) return fmt::format("{:.1f} MiB", b / (1024.0 * 1024));
  if (b >= 1024.0) return fmt::format("{:.1f} KiB", b / 1024.0);
  return fmt::format("{:.0f} B", b);
}

enum class Unit { kInt, kBytes, kSeconds, kMs, kGibps, kGflops, kText, kBool };

struct Key {
  const char* key;
  const char* label;
  Unit unit;
};

// Every structured event key Tern writes, in display order (memory, checkpoint, resume, peak,
// placement).
constexpr Key kKeys[] = {
    {"rank", "rank", Unit::kInt},
    {"step", "step", Unit::kInt},
    {"param_bytes", "params", Unit::kBytes},
    {"grad_bytes", "grads", Unit::kBytes},
    {"optim_bytes", "optimizer", Unit::kBytes},
    {"gather_pool_bytes", "gather pool", Unit::kBytes},
    {"quant_scratch_bytes", "ZeRO++ buffers", Unit::kBytes},
    {"hpz_bytes", "hpZ copy", Unit::kBytes},
    {"zero_stage", "ZeRO stage", Unit::kInt},
    {"zeropp_quantized_gathers", "qwZ gathers", Unit::kInt},
    {"zeropp_quantized_reductions", "qgZ reductions", Unit::kInt},
    {"zeropp_fallback_reductions", "qgZ fallbacks", Unit::kInt},
    {"zeropp_hpz_gathers", "hpZ gathers", Unit::kInt},
    {"zeropp_hpz_fallback_gathers", "hpZ fallbacks", Unit::kInt},
    {"bytes", "size", Unit::kBytes},
    {"seconds", "time", Unit::kSeconds},
    {"gibps", "rate", Unit::kGibps},
    {"stage_ms", "staged", Unit::kMs},
    {"commit_ms", "commit", Unit::kMs},
    {"io_path", "io", Unit::kText},
    {"async", "async", Unit::kBool},
    {"dir", "dir", Unit::kText},
    {"checkpoint", "from", Unit::kText},
    {"gflops", "sgemm peak", Unit::kGflops},
    {"threads", "threads", Unit::kInt},
    {"ranks", "ranks", Unit::kInt},
    {"source", "source", Unit::kText},
    {"cache", "cache", Unit::kText},
    {"cpus", "cpus", Unit::kText},
    {"bound", "bound to", Unit::kText},
    {"omp_threads", "OpenMP threads", Unit::kInt},
    {"blas_threads", "OpenBLAS threads", Unit::kInt},
    {"pid", "pid", Unit::kInt},
};

std::string Value(const json& v, Unit unit) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
  if (!v.is_number()) return v.dump(-1, ' ', false, json::error_handler_t::replace);
  const double d = v.get<double>();
  switch (unit) {
    case Unit::kBytes:
      return Bytes(d);
    case Unit::kSeconds:
      return fmt::format("{:.2f} s", d);
    case Unit::kMs:
      return fmt::format("{:.1f} ms", d);
    case Unit::kGibps:
      return fmt::format("{:.2f} GiB/s", d);
    case Unit::kGflops:
      return fmt::format("{:.1f} GFLOP/s", d);
    default:
      return v.is_number_integer() || d == std::floor(d) ? fmt::format("{:.0f}", d)
                                                         : fmt::format("{:.4g}", d);
  }
}

// " (measured now, cached in PATH)" from the summary's peak_source / peak_cache.
std::string PeakSource(const json& s) {
  const std::string source = Str(s, "peak_source"), cache = Str(s, "peak_cache");
  if (source == "measured")
    return cache.empty() ? " (measured now)" : " (measured now, cached in " + cache + ")";
  if (source == "cached") return " (cached in " + cache + ")";
  if (source == "flag") return " (given by --peak-gflops)";
  if (source == "env") return " (given by TERN_PEAK_GFLOPS)";
  return "";
}

}  // namespace

std::string StepLine(const json& m) {
  return fmt::format(
      "step {:>6}/{:<6} | loss {:.4f} | lr {:.3e} | {:>8.0f} tok/s | {:>7.1f} ms/step | ETA {}",
      static_cast<int64_t>(Num(m, "step")), static_cast<int64_t>(Num(m, "total_steps")),
      Num(m, "loss"), Num(m, "lr"), Num(m, "tokens_per_s"), Num(m, "step_ms"),
      Duration(Num(m, "eta_s")));
}

std::string EvalLine(const json& e) {
  return fmt::format("eval at step {}: val_loss {:.4f}", static_cast<int64_t>(Num(e, "step")),
                     Num(e, "val_loss"));
}

std::string SummaryLine(const json& s) {
  const double val = Num(s, "val_loss", -1);
  std::string mfu = fmt::format("MFU {:.1f}%", 100 * Num(s, "mfu"));
  if (Num(s, "sgemm_peak_gflops") > 0)
    mfu +=
        fmt::format(" of {:.1f} GFLOP/s sgemm peak{}", Num(s, "sgemm_peak_gflops"), PeakSource(s));
  return fmt::format(
      "done: {} steps | final loss {:.4f} | val loss {} | {:.0f} tok/s | {:.1f} ms/step "
      "(median) | {} | peak RSS {:.0f} MiB",
      static_cast<int64_t>(Num(s, "steps")), Num(s, "final_loss"),
      val >= 0 ? fmt::format("{:.4f}", val) : "n/a", Num(s, "tokens_per_s"),
      Num(s, "step_ms_median"), mfu, Num(s, "peak_rss_mib"));
}

Fields EventFields(const std::string& kind, const std::string& message) {
  Fields out;
  if (message.empty() || message.front() != '{') return out;
  json j = json::parse(message, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return out;
  for (const Key& k : kKeys) {
    auto it = j.find(k.key);
    if (it == j.end() || it->is_null()) continue;
    out.emplace_back(k.label, Value(*it, k.unit));
    j.erase(it);
  }
  for (const auto& [key, value] : j.items()) {
    if (!value.is_null()) out.emplace_back(key, Value(value, Unit::kText));
  }
  return out;
}

std::string EventText(const std::string& kind, const std::string& message) {
  const Fields fields = EventFields(kind, message);
  if (fields.empty()) return message;
  std::string text;
  for (const auto& [label, value] : fields) {
    if (!text.empty()) text += ", ";
    text += label + " " + value;
  }
  return text;
}

std::optional<std::string> HumanLine(const std::string& line, int steps_per_print) {
  const size_t start = line.find_first_not_of(" \t\r");
  if (start == std::string::npos || line[start] != '{') return std::nullopt;
  return HumanLineOf(json::parse(line, nullptr, /*allow_exceptions=*/false), steps_per_print);
}

std::optional<std::string> HumanLineOf(const json& j, int steps_per_print) {
  if (!j.is_object()) return std::nullopt;
  const std::string type = Str(j, "type");
  if (type == "step") {
    const auto step = static_cast<int64_t>(Num(j, "step"));
    const bool due = steps_per_print <= 1 || step % steps_per_print == 0 || step == 1 ||
                     step == static_cast<int64_t>(Num(j, "total_steps"));
    return due ? StepLine(j) : std::string();
  }
  if (type == "eval") return EvalLine(j);
  if (type == "summary") return SummaryLine(j);
  if (type == "event") {
    const std::string kind = Str(j, "kind");
    return "[" + kind + "] " + EventText(kind, Str(j, "message"));
  }
  return std::nullopt;
}

}  // namespace tern
