#include "worker/spec/spec.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "worker/spec/job_config.h"

namespace tern::spec {
namespace {

const char* kSpec = R"({
  "model": {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4},
  "data": {"path": "/nonexistent/corpus", "seq_len": 32},
  "train_micro_batch_size_per_gpu": 4,
  "gradient_accumulation_steps": 2,
  "optimizer": {"type": "AdamW", "params": {"lr": 0.002, "betas": [0.9, 0.95]}},
  "scheduler": {"type": "WarmupCosineLR", "params": {"warmup_num_steps": 10}},
  "zero_optimization": {"stage": 2},
  "train_iters": 100
})";

TEST(JobSpec, ParsesDeepSpeedKeysAndResolvesDefaults) {
  auto spec = ParseJobSpec(kSpec, {}, "spec.json");
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto cfg = ResolveJob(*spec, {.world_size = 2, .check_files = false});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->global_batch, 16);
  EXPECT_EQ(cfg->zero_stage, 2);
  EXPECT_FLOAT_EQ(cfg->adamw.beta2, 0.95f);
  EXPECT_EQ(cfg->steps_per_print, 10);
  EXPECT_EQ(cfg->dims.HS, 16);
}

// elastic.keep: the global batch (default: accumulation absorbs the world, only sizes that
// divide it) or the micro batch and accumulation (any size; the global batch follows).
TEST(JobSpec, ElasticKeepsTheGlobalBatchOrTheMicroBatch) {
  for (const char* keep : {"global_batch", "micro_batch"}) {
    auto spec = ParseJobSpec(kSpec,
                             {"resources.nodes=4", "elastic.enabled=true", "elastic.min_nodes=1",
                              std::string("elastic.keep=") + keep},
                             "spec.json");
    ASSERT_TRUE(spec.ok()) << spec.status();
    auto cfg = ResolveJob(*spec, {.check_files = false, .cluster = true});
    const bool global = std::string(keep) == "global_batch";
    if (global) {  // 32 = 4 x 2 x 4 nodes: 3 nodes cannot keep it
      ASSERT_FALSE(cfg.ok());
      EXPECT_NE(cfg.status().message().find("cannot be kept on 3 node(s)"), std::string::npos)
          << cfg.status();
      spec->mutable_elastic()->set_min_nodes(2);
      spec->mutable_elastic()->set_max_nodes(2);
      cfg = ResolveJob(*spec, {.check_files = false, .cluster = true});
    }
    ASSERT_TRUE(cfg.ok()) << keep << ": " << cfg.status();
    EXPECT_EQ(cfg->elastic.keep_global_batch, global);
    const int nodes = global ? 2 : 3;
    const std::vector<int> sizes = global ? std::vector<int>{2} : std::vector<int>{1, 2, 3, 4};
    EXPECT_EQ(ElasticNodeCounts(*cfg), sizes);
    const RoundBatch b = ElasticRoundBatch(*cfg, nodes);
    EXPECT_EQ(b.micro_batch, 4);
    EXPECT_EQ(b.accum, global ? 4 : 2);
    EXPECT_EQ(b.global_batch, global ? 32 : 4 * 2 * 3);
  }
}

TEST(JobSpec, SetOverridesAnyField) {
  auto spec = ParseJobSpec(
      kSpec, {"train_iters=7", "optimizer.params.lr=0.5", "name=my run", "resources.nodes=2"},
      "spec.json");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->train_iters(), 7);
  EXPECT_FLOAT_EQ(spec->optimizer().params().lr(), 0.5f);
  EXPECT_EQ(spec->name(), "my run");
  EXPECT_EQ(spec->resources().nodes(), 2);
}

TEST(JobSpec, MalformedJsonNamesFileAndPosition) {
  auto spec = ParseJobSpec("{\"train_iters\": 5,", {}, "bad.json");
  ASSERT_FALSE(spec.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(spec.status()));
  EXPECT_NE(std::string(spec.status().message()).find("bad.json: malformed JSON"),
            std::string::npos);
}

TEST(JobSpec, UnknownFieldsNamedWithPath) {
  auto spec = ParseJobSpec(R"({"zero_optimization": {"stagee": 3}, "bogus": 1})", {}, "s.json");
  ASSERT_FALSE(spec.ok());
  const std::string msg(spec.status().message());
  EXPECT_NE(msg.find("unknown field 'zero_optimization.stagee'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown field 'bogus'"), std::string::npos) << msg;
}

TEST(JobSpec, ValidationListsEveryOffendingField) {
  auto spec = ParseJobSpec(kSpec,
                           {"model.num_attention_heads=5", "train_iters=0",
                            "zero_optimization.stage=4", "train_batch_size=100"},
                           "spec.json");
  ASSERT_TRUE(spec.ok());
  auto cfg = ResolveJob(*spec, {.world_size = 2, .check_files = true});
  ASSERT_FALSE(cfg.ok());
  const std::string msg(cfg.status().message());
  for (const char* field :
       {"model.hidden_size: 64 is not divisible by num_attention_heads 5", "train_iters",
        "zero_optimization.stage", "train_batch_size", "/nonexistent/corpus.bin does not exist"})
    EXPECT_NE(msg.find(field), std::string::npos) << field << " missing in: " << msg;
}

// Resolves kSpec with overrides (files not required), expecting failure; returns the message.
std::string RefusedWith(const std::vector<std::string>& sets) {
  auto spec = ParseJobSpec(kSpec, sets, "spec.json");
  if (!spec.ok()) return std::string(spec.status().message());
  auto cfg = ResolveJob(*spec, {.world_size = 2, .check_files = false});
  if (cfg.ok()) return "accepted";
  EXPECT_TRUE(absl::IsInvalidArgument(cfg.status()));
  return std::string(cfg.status().message());
}

std::vector<std::string> WarningsFor(const std::vector<std::string>& sets) {
  auto spec = ParseJobSpec(kSpec, sets, "spec.json");
  EXPECT_TRUE(spec.ok()) << spec.status();
  auto cfg = ResolveJob(*spec, {.world_size = 2, .check_files = false});
  EXPECT_TRUE(cfg.ok()) << cfg.status();
  return cfg.ok() ? cfg->warnings : std::vector<std::string>{};
}

bool Mentions(const std::vector<std::string>& lines, const std::string& key) {
  for (const auto& l : lines)
    if (l.rfind(key + ":", 0) == 0) return true;
  return false;
}

TEST(JobSpec, ResolvesZeroAndCheckpointOptionsForTheLayersThatUseThem) {
  auto spec = ParseJobSpec(kSpec,
                           {"zero_optimization.stage=3", "zero_optimization.overlap_comm=false",
                            "zero_optimization.stage3_prefetch_bucket_size=1234",
                            "zero_optimization.stage3_param_persistence_threshold=0",
                            "checkpoint.dir=/ck", "checkpoint.interval=5", "checkpoint.async=false",
                            "checkpoint.writer.block_size=65536", "checkpoint.load=step-000010"},
                           "spec.json");
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto cfg = ResolveJob(*spec, {.world_size = 2, .check_files = false});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->zero.stage, 3);
  EXPECT_FALSE(cfg->zero.overlap_comm);
  EXPECT_EQ(cfg->zero.prefetch_bucket_size, 1234);
  EXPECT_EQ(cfg->zero.persistence_threshold, 0);
  EXPECT_EQ(cfg->checkpoint.dir, "/ck");
  EXPECT_EQ(cfg->checkpoint.interval, 5);
  EXPECT_FALSE(cfg->checkpoint.async);
  EXPECT_EQ(cfg->checkpoint.block_size, 65536u);
  EXPECT_EQ(cfg->checkpoint.load, "step-000010");
  EXPECT_TRUE(cfg->warnings.empty());
}

TEST(JobSpec, EverySectionIsValidatedAtOnce) {
  const std::string msg = RefusedWith(
      {"checkpoint.dir=/ck", "checkpoint.keep_last=0", "checkpoint.writer.queue_depth=0",
       "elastic.min_nodes=0", "resources.threads_per_rank=0", "zero_optimization.stage=7",
       "zero_optimization.zero_quantized_weights=true", "scheduler.type=Linear"});
  for (const char* field :
       {"checkpoint.keep_last", "checkpoint.writer.queue_depth", "elastic.min_nodes",
        "resources.threads_per_rank", "zero_optimization.stage",
        "zero_optimization.zero_quantized_weights: needs zero_optimization.stage 3",
        "scheduler.type"})
    EXPECT_NE(msg.find(field), std::string::npos) << field << " missing in: " << msg;
}

TEST(JobSpec, UnsupportedFeaturesAreRefusedByName) {
  EXPECT_NE(
      RefusedWith({"zero_optimization.stage=2", "zero_optimization.zero_quantized_gradients=true"})
          .find(
              "zero_optimization.zero_quantized_gradients: needs zero_optimization.stage 3, got 2"),
      std::string::npos);
  EXPECT_NE(
      RefusedWith({"zero_optimization.stage=3", "zero_optimization.zero_quantization_block=3"})
          .find("zero_optimization.zero_quantization_block: 3 must be even"),
      std::string::npos);
  EXPECT_NE(
      RefusedWith({"zero_optimization.zero_hpz_partition_size=8"})
          .find("zero_optimization.zero_hpz_partition_size: 8 needs zero_optimization.stage 3"),
      std::string::npos);
  // Elastic resume keeps the global batch: every node count in range must divide it.
  EXPECT_NE(RefusedWith({"elastic.enabled=true", "elastic.max_nodes=3"})
                .find("cannot be kept on 3 node(s)"),
            std::string::npos);
  EXPECT_NE(RefusedWith({"checkpoint.interval=10"}).find("checkpoint.dir: must be set"),
            std::string::npos);
  EXPECT_NE(RefusedWith({"model.hidden_act=gelu"}).find("model.hidden_act: 'gelu'"),
            std::string::npos);
  EXPECT_NE(
      RefusedWith({"model.sliding_window=16"}).find("model.sliding_window: 16 < data.seq_len"),
      std::string::npos);
  EXPECT_NE(RefusedWith({"scheduler.params.last_batch_iteration=5"})
                .find("scheduler.params.last_batch_iteration"),
            std::string::npos);
  // Values that change nothing are accepted.
  EXPECT_EQ(RefusedWith({"zero_optimization.zero_quantized_weights=false",
                         "zero_optimization.zero_hpz_partition_size=1", "model.hidden_act=silu",
                         "model.sliding_window=32"}),
            "accepted");
}

TEST(JobSpec, ZeroPlusPlusKeysResolveAtStage3) {
  auto spec =
      ParseJobSpec(kSpec,
                   {"zero_optimization.stage=3", "zero_optimization.zero_quantized_weights=true",
                    "zero_optimization.zero_quantized_gradients=true",
                    "zero_optimization.zero_quantization_block=2048",
                    "zero_optimization.zero_gradient_quantization_block=128",
                    "zero_optimization.zero_hpz_partition_size=2"},
                   "spec.json");
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto cfg = ResolveJob(*spec, {.world_size = 2, .check_files = false});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_TRUE(cfg->zero.quantized_weights);
  EXPECT_TRUE(cfg->zero.quantized_gradients);
  EXPECT_EQ(cfg->zero.quant_block, 2048);
  EXPECT_EQ(cfg->zero.grad_quant_block, 128);
  EXPECT_EQ(cfg->zero.hpz_partition_size, 2);
  EXPECT_TRUE(cfg->warnings.empty());
}

TEST(JobSpec, TuningHintsWithoutEffectAreAcceptedWithAWarningNamingThem) {
  const auto w = WarningsFor({"zero_optimization.allgather_bucket_size=1000",
                              "zero_optimization.reduce_bucket_size=10",
                              "zero_optimization.stage3_max_live_parameters=10",
                              "checkpoint.dir=/ck", "checkpoint.writer.io_buffer_size=1024",
                              "optimizer.params.torch_adam=true", "log_dir=/tmp/tb"});
  for (const char* key :
       {"zero_optimization.allgather_bucket_size", "zero_optimization.reduce_bucket_size",
        "zero_optimization.stage3_max_live_parameters", "checkpoint.writer.io_buffer_size",
        "optimizer.params.torch_adam", "log_dir"})
    EXPECT_TRUE(Mentions(w, key)) << key;
  // reduce_bucket_size takes effect at stage 0: no warning there.
  EXPECT_FALSE(Mentions(
      WarningsFor({"zero_optimization.stage=0", "zero_optimization.reduce_bucket_size=10"}),
      "zero_optimization.reduce_bucket_size"));
}

// The host tier's budget only matters to FPDT's offloaded store; the FPDT keys need enabled.
TEST(JobSpec, MemoryBudgetAndFpdtKeysWithoutEffectAreWarnings) {
  EXPECT_TRUE(Mentions(WarningsFor({"resources.host_memory_budget=1000000"}),
                       "resources.host_memory_budget"));
  EXPECT_TRUE(Mentions(
      WarningsFor({"resources.host_memory_budget=1000000", "sequence_parallel.fpdt.enabled=true",
                   "sequence_parallel.fpdt.offload=false"}),
      "resources.host_memory_budget"));
  EXPECT_FALSE(Mentions(
      WarningsFor({"resources.host_memory_budget=1000000", "sequence_parallel.fpdt.enabled=true"}),
      "resources.host_memory_budget"));
  EXPECT_TRUE(
      Mentions(WarningsFor({"sequence_parallel.fpdt.chunk_size=64"}), "sequence_parallel.fpdt"));
  EXPECT_FALSE(Mentions(WarningsFor({"resources.device_memory_budget=1000000000"}),
                        "resources.device_memory_budget"));
}

TEST(JobSpec, BooleansMustBeJsonBooleans) {
  for (const char* set : {"checkpoint.async=yes", "zero_optimization.overlap_comm=\"true\"",
                          "model.tie_word_embeddings=1"}) {
    auto spec = ParseJobSpec(kSpec, {set}, "spec.json");
    ASSERT_FALSE(spec.ok()) << set;
    EXPECT_NE(std::string(spec.status().message()).find(": expected true or false, got "),
              std::string::npos)
        << spec.status();
  }
  EXPECT_TRUE(ParseJobSpec(kSpec, {"checkpoint.async=false"}, "spec.json").ok());
}

TEST(JobSpec, SpecFilesAreBoundedAndMustBeRegular) {
  EXPECT_TRUE(absl::IsInvalidArgument(LoadJobSpec("/dev/zero", {}).status()));
  EXPECT_TRUE(absl::IsNotFound(LoadJobSpec("/no/such/spec.json", {}).status()));
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  auto st = ParseJobSpec(deep, {}, "deep.json").status();
  EXPECT_TRUE(absl::IsInvalidArgument(st));
  EXPECT_NE(std::string(st.message()).find("nested deeper"), std::string::npos) << st;
  EXPECT_TRUE(absl::IsInvalidArgument(ParseJobSpec(kSpec, {"model..x=1"}, "s.json").status()));
}

// A Hugging Face config.json: fields Tern implements are used, metadata skipped, and fields
// that would change the model are refused by name unless they hold the no-op value.
class HfConfig : public ::testing::Test {
 protected:
  std::string Write(const std::string& json) {
    const std::string path = ::testing::TempDir() + "/hf_config_" + std::to_string(::getpid()) +
                             "_" + std::to_string(n_++) + ".json";
    std::ofstream(path) << json;
    return path;
  }
  int n_ = 0;
};

TEST_F(HfConfig, MetadataIsSkippedAndNoOpValuesAccepted) {
  const std::string path = Write(R"({"model_type": "llama", "hidden_size": 64,
      "num_hidden_layers": 2, "num_attention_heads": 4, "transformers_version": "4.40",
      "use_cache": true, "rope_scaling": null, "attention_bias": false, "head_dim": 16,
      "architectures": ["LlamaForCausalLM"], "torch_dtype": "bfloat16", "hidden_act": "silu"})");
  auto spec = ParseJobSpec(kSpec, {"model.config_file=" + path}, "spec.json");
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto cfg = ResolveJob(*spec, {.world_size = 2, .check_files = false});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->dims.C, 64);
}

TEST_F(HfConfig, UnimplementedFieldsAreRefusedByName) {
  const std::string path = Write(R"({"model_type": "llama", "hidden_size": 64,
      "num_hidden_layers": 2, "num_attention_heads": 4,
      "rope_scaling": {"type": "linear", "factor": 2.0}, "attention_bias": true,
      "fancy_new_thing": 3, "head_dim": 32})");
  auto model = model::LoadHfConfig(path);
  ASSERT_FALSE(model.ok());
  const std::string msg(model.status().message());
  for (const char* field :
       {"'rope_scaling'", "'attention_bias'", "'fancy_new_thing'", "'head_dim'"})
    EXPECT_NE(msg.find(field), std::string::npos) << field << " missing in: " << msg;
}

}  // namespace
}  // namespace tern::spec

namespace tern::spec {
namespace {

TEST(JobSpec, ActivationCheckpointingTakesEffectOrIsRefusedByName) {
  auto on = ParseJobSpec(kSpec, {"activation_checkpointing.enabled=true"}, "test");
  ASSERT_TRUE(on.ok()) << on.status();
  ResolveOptions ro;
  ro.check_files = false;
  auto c = ResolveJob(*on, ro);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->activation_checkpointing);
  EXPECT_TRUE(c->warnings.empty());
  for (const char* key : {"partition_activations", "cpu_checkpointing"}) {
    const std::string set = std::string("activation_checkpointing.") + key + "=true";
    auto s = ParseJobSpec(kSpec, {"activation_checkpointing.enabled=true", set}, "test");
    ASSERT_TRUE(s.ok());
    auto r = ResolveJob(*s, ro);
    ASSERT_FALSE(r.ok()) << key;
    EXPECT_NE(r.status().message().find(std::string("activation_checkpointing.") + key),
              std::string::npos)
        << r.status();
  }
  auto n = ParseJobSpec(kSpec, {"activation_checkpointing.number_checkpoints=4"}, "test");
  ASSERT_TRUE(n.ok());
  EXPECT_FALSE(ResolveJob(*n, ro).ok());
  // Keys that change nothing are named in a warning; the section without enabled warns too.
  auto w = ParseJobSpec(kSpec, {"activation_checkpointing.profile=true"}, "test");
  ASSERT_TRUE(w.ok());
  auto wc = ResolveJob(*w, ro);
  ASSERT_TRUE(wc.ok());
  EXPECT_FALSE(wc->activation_checkpointing);
  ASSERT_EQ(wc->warnings.size(), 2u);
  EXPECT_NE(wc->warnings[0].find("activation_checkpointing.profile"), std::string::npos);
  EXPECT_NE(wc->warnings[1].find("without \"enabled\""), std::string::npos);
}

// sequence_parallel_size: DeepSpeed's batch rule with data-parallel ranks = world / P; every
// condition it needs refused by name.
TEST(JobSpec, SequenceParallelSizeSplitsTheWorldOrIsRefusedByName) {
  ResolveOptions ro;
  ro.check_files = false;
  ro.world_size = 4;
  auto s = ParseJobSpec(kSpec, {"sequence_parallel_size=2"}, "test");
  ASSERT_TRUE(s.ok()) << s.status();
  auto c = ResolveJob(*s, ro);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sp_size, 2);
  EXPECT_EQ(c->dp_size, 2);
  EXPECT_EQ(c->world_size(), 4);
  EXPECT_EQ(c->global_batch, 4 * 2 * 2);  // micro x accum x world / P
  auto tbs = ParseJobSpec(kSpec, {"sequence_parallel_size=2", "train_batch_size=32"}, "test");
  ASSERT_TRUE(tbs.ok());
  auto bad_tbs = ResolveJob(*tbs, ro);  // 32 would need 4 data-parallel ranks
  ASSERT_FALSE(bad_tbs.ok());
  EXPECT_NE(bad_tbs.status().message().find("(world / sequence_parallel_size 2)"),
            std::string::npos)
      << bad_tbs.status();
  for (const auto& [sets, want] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"sequence_parallel_size=0"}, "sequence_parallel_size: must be >= 1, got 0"},
           {{"sequence_parallel_size=3"},
            "sequence_parallel_size: 3 does not divide the world "
            "size 4"},
           {{"sequence_parallel_size=4", "data.seq_len=30"}, "does not divide data.seq_len 30"},
           {{"sequence_parallel_size=4", "model.num_key_value_heads=2"},
            "sequence_parallel_size: 4 exceeds num_key_value_heads 2"},
           {{"sequence_parallel_size=2", "elastic.enabled=true"}, "with elastic.enabled"},
           // FPDT over the group: the (global) chunk must split evenly over the ranks and
           // divide the sequence.
           {{"sequence_parallel_size=2", "sequence_parallel.fpdt.enabled=true",
             "sequence_parallel.fpdt.chunk_size=7"},
            "with sequence_parallel.fpdt.chunk_size 7: over a sequence-parallel group"},
           {{"sequence_parallel_size=2", "sequence_parallel.fpdt.enabled=true",
             "sequence_parallel.fpdt.chunk_size=6", "data.seq_len=16"},
            "must be a multiple of the group and divide data.seq_len 16"}}) {
    auto p = ParseJobSpec(kSpec, sets, "test");
    ASSERT_TRUE(p.ok()) << p.status();
    auto r = ResolveJob(*p, ro);
    ASSERT_FALSE(r.ok()) << want;
    EXPECT_NE(r.status().message().find(want), std::string::npos) << r.status();
  }
}

}  // namespace
}  // namespace tern::spec
