#include "client/engine/output.h"

#include "spdlog/fmt/fmt.h"
#include "worker/core/run_text.h"

namespace tern::cli {

void ConsoleSink::Print(const nlohmann::json& j) {
  if (json_) {
    fmt::print(out_, "{}\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  } else if (auto line = HumanLineOf(j, every_); line && !line->empty()) {
    fmt::print(out_, "{}\n", *line);
  }
  std::fflush(out_);
}

void ConsoleSink::Relay(const std::string& line) {
  if (json_) {
    fmt::print(out_, "{}\n", line);
  } else if (auto human = HumanLine(line, every_); !human || !human->empty()) {
    fmt::print(out_, "{}\n", human ? *human : line);
  }
  std::fflush(out_);
}

void ConsoleSink::OnStep(const engine::StepMetrics& m) {
  Print({{"type", "step"},
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
         {"eta_s", m.eta_s}});
}

void ConsoleSink::OnEval(int64_t step, double val_loss) {
  Print({{"type", "eval"}, {"step", step}, {"val_loss", val_loss}});
}

void ConsoleSink::OnSummary(const engine::TrainSummary& s) {
  Print({{"type", "summary"},
         {"step", s.steps},  // the step the summary belongs to: the job's last
         {"tokens_per_s", s.tokens_per_s},
         {"step_ms_median", s.step_ms_median},
         {"mfu", s.mfu},
         {"model_gflops", s.model_gflops},
         {"sgemm_peak_gflops", s.sgemm_peak_gflops},
         {"peak_source", s.peak_source},
         {"peak_cache", s.peak_cache},
         {"peak_rss_mib", s.peak_rss_mib},
         {"device_peak_bytes", s.device_peak_bytes},
         {"host_peak_bytes", s.host_peak_bytes},
         {"params", s.params},
         {"steps", s.steps},
         {"final_loss", s.final_loss},
         {"val_loss", s.val_loss >= 0 ? nlohmann::json(s.val_loss) : nlohmann::json()},
         {"param_bytes", s.param_bytes},
         {"grad_bytes", s.grad_bytes},
         {"optim_bytes", s.optim_bytes},
         {"gather_pool_bytes", s.gather_pool_bytes}});
}

void ConsoleSink::OnEvent(const std::string& kind, const std::string& message) {
  Print({{"type", "event"}, {"kind", kind}, {"message", message}});
}

}  // namespace tern::cli
