#include "daemon/spec_validation.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tern::daemon {
namespace {

// First set of (primary, alias); 0 when neither is set.
int64_t Either(bool has_a, int64_t a, bool has_b, int64_t b) { return has_a ? a : (has_b ? b : 0); }

void CheckModel(const tern::v1::ModelConfig& m, std::vector<std::string>* errors) {
  const std::string& t = m.model_type();
  if (t != "llama" && t != "gpt2" && t != "phi3") {
    errors->push_back(absl::StrCat(
        "model.model_type: must be \"llama\", \"gpt2\" or \"phi3\" (got \"", t, "\")"));
  }
  const bool from_file = !m.config_file().empty();
  const int64_t hidden = Either(m.has_hidden_size(), m.hidden_size(), m.has_n_embd(), m.n_embd());
  const int64_t layers =
      Either(m.has_num_hidden_layers(), m.num_hidden_layers(), m.has_n_layer(), m.n_layer());
  const int64_t heads =
      Either(m.has_num_attention_heads(), m.num_attention_heads(), m.has_n_head(), m.n_head());
  auto dim = [&](const char* name, const char* alias, int64_t v, bool set) {
    if (!set && !from_file) {
      errors->push_back(absl::StrCat("model.", name, ": missing (set it, or model.", alias,
                                     ", or model.config_file)"));
    } else if (set && v <= 0) {
      errors->push_back(absl::StrCat("model.", name, ": must be > 0 (got ", v, ")"));
    }
  };
  dim("hidden_size", "n_embd", hidden, m.has_hidden_size() || m.has_n_embd());
  dim("num_hidden_layers", "n_layer", layers, m.has_num_hidden_layers() || m.has_n_layer());
  dim("num_attention_heads", "n_head", heads, m.has_num_attention_heads() || m.has_n_head());
  if (hidden > 0 && heads > 0 && hidden % heads != 0) {
    errors->push_back(absl::StrCat("model.num_attention_heads: ", heads,
                                   " heads do not divide hidden_size ", hidden));
  }
  if (m.has_num_key_value_heads()) {
    const int64_t kv = m.num_key_value_heads();
    if (kv <= 0 || (heads > 0 && heads % kv != 0)) {
      errors->push_back(absl::StrCat("model.num_key_value_heads: ", kv,
                                     " must be > 0 and divide num_attention_heads ", heads));
    }
  }
  if (m.has_vocab_size() && m.vocab_size() <= 0) {
    errors->push_back(absl::StrCat("model.vocab_size: must be > 0 (got ", m.vocab_size(), ")"));
  }
  if (m.has_intermediate_size() && m.intermediate_size() <= 0) {
    errors->push_back(
        absl::StrCat("model.intermediate_size: must be > 0 (got ", m.intermediate_size(), ")"));
  }
  auto zero_only = [&](const char* name, bool has, float v) {
    if (has && v != 0.0f)
      errors->push_back(absl::StrCat("model.", name, ": must be 0 (no dropout)"));
  };
  zero_only("attention_dropout", m.has_attention_dropout(), m.attention_dropout());
  zero_only("resid_pdrop", m.has_resid_pdrop(), m.resid_pdrop());
  zero_only("embd_pdrop", m.has_embd_pdrop(), m.embd_pdrop());
  zero_only("attn_pdrop", m.has_attn_pdrop(), m.attn_pdrop());
}

void CheckTraining(const tern::v1::JobSpec& s, std::vector<std::string>* errors) {
  if (!s.has_train_iters()) {
    errors->push_back("train_iters: missing (number of optimizer steps, > 0)");
  } else if (s.train_iters() <= 0) {
    errors->push_back(absl::StrCat("train_iters: must be > 0 (got ", s.train_iters(), ")"));
  }
  auto positive = [&](const char* name, bool has, int64_t v) {
    if (has && v <= 0) errors->push_back(absl::StrCat(name, ": must be > 0 (got ", v, ")"));
  };
  auto non_negative = [&](const char* name, bool has, int64_t v) {
    if (has && v < 0) errors->push_back(absl::StrCat(name, ": must be >= 0 (got ", v, ")"));
  };
  positive("train_micro_batch_size_per_gpu", s.has_train_micro_batch_size_per_gpu(),
           s.train_micro_batch_size_per_gpu());
  positive("gradient_accumulation_steps", s.has_gradient_accumulation_steps(),
           s.gradient_accumulation_steps());
  positive("train_batch_size", s.has_train_batch_size(), s.train_batch_size());
  positive("steps_per_print", s.has_steps_per_print(), s.steps_per_print());
  positive("data.seq_len", s.data().has_seq_len(), s.data().seq_len());
  non_negative("eval_interval", s.has_eval_interval(), s.eval_interval());
  non_negative("eval_iters", s.has_eval_iters(), s.eval_iters());
  non_negative("checkpoint.interval", s.checkpoint().has_interval(), s.checkpoint().interval());
  if (s.has_gradient_clipping() && s.gradient_clipping() < 0) {
    errors->push_back("gradient_clipping: must be >= 0");
  }
  const auto& opt = s.optimizer();
  if (!opt.type().empty() && opt.type() != "AdamW" && opt.type() != "Adam") {
    errors->push_back(
        absl::StrCat("optimizer.type: unknown \"", opt.type(), "\" (use \"AdamW\" or \"Adam\")"));
  }
  if (opt.params().has_lr() && !(opt.params().lr() > 0)) {
    errors->push_back("optimizer.params.lr: must be > 0");
  }
  if (opt.params().betas_size() != 0 && opt.params().betas_size() != 2) {
    errors->push_back("optimizer.params.betas: must have 2 values");
  }
  const std::string& sched = s.scheduler().type();
  if (!sched.empty() && sched != "WarmupLR" && sched != "WarmupDecayLR" &&
      sched != "WarmupCosineLR") {
    errors->push_back(absl::StrCat("scheduler.type: unknown \"", sched, "\""));
  }
  const auto& z = s.zero_optimization();
  if (z.has_stage() && (z.stage() < 0 || z.stage() > 3)) {
    errors->push_back(
        absl::StrCat("zero_optimization.stage: unknown stage ", z.stage(), " (use 0, 1, 2 or 3)"));
  }
}

void CheckResources(const tern::v1::JobSpec& s, std::vector<std::string>* errors) {
  const auto& r = s.resources();
  if (r.has_nodes() && r.nodes() < 1) {
    errors->push_back(absl::StrCat("resources.nodes: must be >= 1 (got ", r.nodes(), ")"));
  }
  if (r.has_ranks_per_node() && r.ranks_per_node() < 1) {
    errors->push_back(
        absl::StrCat("resources.ranks_per_node: must be >= 1 (got ", r.ranks_per_node(), ")"));
  }
  if (r.has_threads_per_rank() && r.threads_per_rank() < 1) {
    errors->push_back(
        absl::StrCat("resources.threads_per_rank: must be >= 1 (got ", r.threads_per_rank(), ")"));
  }
  const auto& e = s.elastic();
  if (e.has_min_nodes() && e.min_nodes() < 1) {
    errors->push_back("elastic.min_nodes: must be >= 1");
  }
  if (e.has_min_nodes() && e.has_max_nodes() && e.max_nodes() < e.min_nodes()) {
    errors->push_back("elastic.max_nodes: must be >= elastic.min_nodes");
  }
}

}  // namespace

absl::Status ValidateJobSpec(const tern::v1::JobSpec& spec) {
  std::vector<std::string> errors;
  CheckModel(spec.model(), &errors);
  CheckTraining(spec, &errors);
  CheckResources(spec, &errors);
  if (errors.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("invalid job spec: ", absl::StrJoin(errors, "; ")));
}

}  // namespace tern::daemon
