#include "client/engine/output.h"

#include <cmath>

#include "nlohmann/json.hpp"
#include "spdlog/fmt/fmt.h"

namespace tern::cli {

std::string FormatDuration(double s) {
  if (!std::isfinite(s) || s < 0) s = 0;
  const long t = std::lround(s);
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

void ConsoleSink::OnStep(const engine::StepMetrics& m) {
  if (json_) {
    nlohmann::json j = {{"type", "step"},
                        {"step", m.step},
                        {"total_steps", m.total_steps},
                        {"loss", m.loss},
                        {"lr", m.lr},
                        {"grad_norm", m.grad_norm},
                        {"tokens_per_s", m.tokens_per_s},
                        {"step_ms", m.step_ms},
                        {"forward_ms", m.forward_ms},
                        {"backward_ms", m.backward_ms},
                        {"comm_ms", m.comm_ms},
                        {"optimizer_ms", m.optimizer_ms},
                        {"checkpoint_ms", m.checkpoint_ms},
                        {"bytes_intra_node", m.bytes_intra_node},
                        {"bytes_inter_node", m.bytes_inter_node},
                        {"eta_s", m.eta_s}};
    fmt::print(out_, "{}\n", j.dump());
  } else if (m.step % every_ == 0 || m.step == m.total_steps || m.step == 1) {
    fmt::print(
        out_,
        "step {:>6}/{:<6} | loss {:.4f} | lr {:.3e} | {:>8.0f} tok/s | {:>7.1f} ms/step | ETA {}\n",
        m.step, m.total_steps, m.loss, m.lr, m.tokens_per_s, m.step_ms, FormatDuration(m.eta_s));
  }
  std::fflush(out_);
}

void ConsoleSink::OnEval(int64_t step, double val_loss) {
  if (json_) {
    fmt::print(out_, "{}\n",
               nlohmann::json{{"type", "eval"}, {"step", step}, {"val_loss", val_loss}}.dump());
  } else {
    fmt::print(out_, "eval at step {}: val_loss {:.4f}\n", step, val_loss);
  }
  std::fflush(out_);
}

void ConsoleSink::OnSummary(const engine::TrainSummary& s) {
  nlohmann::json j = {{"type", "summary"},
                      {"tokens_per_s", s.tokens_per_s},
                      {"step_ms_median", s.step_ms_median},
                      {"mfu", s.mfu},
                      {"model_gflops", s.model_gflops},
                      {"sgemm_peak_gflops", s.sgemm_peak_gflops},
                      {"peak_rss_mib", s.peak_rss_mib},
                      {"params", s.params},
                      {"steps", s.steps},
                      {"final_loss", s.final_loss},
                      {"val_loss", s.val_loss >= 0 ? nlohmann::json(s.val_loss) : nlohmann::json()},
                      {"param_bytes", s.param_bytes},
                      {"grad_bytes", s.grad_bytes},
                      {"optim_bytes", s.optim_bytes}};
  if (json_) {
    fmt::print(out_, "{}\n", j.dump());
  } else {
    fmt::print(out_,
               "done: {} steps | final loss {:.4f} | val loss {} | {:.0f} tok/s | {:.1f} ms/step "
               "(median) | MFU {:.1f}% | peak RSS {:.0f} MiB\n",
               s.steps, s.final_loss, s.val_loss >= 0 ? fmt::format("{:.4f}", s.val_loss) : "n/a",
               s.tokens_per_s, s.step_ms_median, 100 * s.mfu, s.peak_rss_mib);
  }
  std::fflush(out_);
}

void ConsoleSink::OnEvent(const std::string& kind, const std::string& message) {
  if (json_) {
    fmt::print(out_, "{}\n",
               nlohmann::json{{"type", "event"}, {"kind", kind}, {"message", message}}.dump());
  } else {
    fmt::print(out_, "[{}] {}\n", kind, message);
  }
  std::fflush(out_);
}

}  // namespace tern::cli
