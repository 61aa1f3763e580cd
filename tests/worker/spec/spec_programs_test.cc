// One spec pipeline, three programs: the same bad specs fed to `tern train`, `tern describe`,
// `tern submit` and a running ternd's SubmitJob RPC get the same field-naming message from
// each — exit code 2 from the CLI and INVALID_ARGUMENT from the RPC.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tern/v1/cluster.grpc.pb.h"
#include "tests/daemon/cluster_harness.h"
#include "tests/worker/engine/tern_cli.h"
#include "worker/spec/spec.h"

namespace tern::testing {
namespace {

namespace fs = std::filesystem;

struct BadSpec {
  std::vector<std::string> sets;  // --set overrides on the good spec
  std::string expect;             // part of the message, naming the field
};

// Every section of the spec: model (+ HF config file), data, batch, training, optimizer,
// scheduler, zero_optimization, checkpoint, elastic, resources.
std::vector<BadSpec> BadSpecs(const std::string& hf_config) {
  return {
      {{"model.model_type=bert"}, "model.model_type: 'bert' is not one of gpt2, llama, phi3"},
      {{"model.hidden_size=-8"}, "model.hidden_size: must be > 0, got -8"},
      {{"model.num_attention_heads=5"}, "model.hidden_size: 64 is not divisible by"},
      {{"model.num_key_value_heads=3"}, "model.num_key_value_heads: 3 must be > 0 and divide"},
      {{"model.attention_dropout=0.1"}, "model.attention_dropout: dropout is not supported"},
      {{"model.hidden_act=relu"}, "model.hidden_act: 'relu' is not implemented for llama"},
      {{"model.sliding_window=8"}, "model.sliding_window: 8 < data.seq_len 32"},
      {{"model.config_file=" + hf_config}, "'rope_scaling' = {\"factor\":2.0,\"type\":\"linear\"}"},
      {{"data.seq_len=0"}, "data.seq_len: must be > 0, got 0"},
      {{"data.seq_len=4096"}, "data.seq_len: 4096 exceeds model.max_position_embeddings 64"},
      {{"data.tokenizer=gpt2"}, "data.tokenizer: 'gpt2' is not supported"},
      {{"train_micro_batch_size_per_gpu=0"}, "train_micro_batch_size_per_gpu: must be >= 1, got 0"},
      {{"gradient_accumulation_steps=-1"}, "gradient_accumulation_steps: must be >= 1, got -1"},
      {{"train_batch_size=7"}, "train_batch_size: 7 != train_micro_batch_size_per_gpu 2"},
      {{"train_iters=0"}, "train_iters: must be > 0, got 0"},
      {{"steps_per_print=0"}, "steps_per_print: must be > 0, got 0"},
      {{"eval_iters=-1"}, "eval_iters: must be >= 0, got -1"},
      {{"gradient_clipping=-1"}, "gradient_clipping: must be >= 0"},
      {{"optimizer.type=SGD"}, "optimizer.type: 'SGD' is not supported"},
      {{"optimizer.params.betas=[0.9]"}, "optimizer.params.betas: expected 2 values, got 1"},
      {{"optimizer.params.eps=0"}, "optimizer.params.eps: must be > 0"},
      {{"scheduler.type=OneCycle"}, "scheduler.type: 'OneCycle' is not one of"},
      {{"scheduler.params.warmup_type=cubic"}, "scheduler.params.warmup_type: 'cubic'"},
      {{"scheduler.params.last_batch_iteration=3"}, "scheduler.params.last_batch_iteration: 3"},
      {{"zero_optimization.stage=4"}, "zero_optimization.stage: must be 0, 1, 2 or 3, got 4"},
      {{"zero_optimization.zero_quantized_weights=true"},
       "zero_optimization.zero_quantized_weights: needs zero_optimization.stage 3"},
      {{"zero_optimization.zero_quantized_gradients=true"},
       "zero_optimization.zero_quantized_gradients: needs zero_optimization.stage 3"},
      {{"zero_optimization.zero_hpz_partition_size=4"},
       "zero_optimization.zero_hpz_partition_size: 4 needs zero_optimization.stage 3"},
      {{"zero_optimization.reduce_bucket_size=0"},
       "zero_optimization.reduce_bucket_size: must be > 0, got 0"},
      {{"checkpoint.dir=/tmp/tern-never", "checkpoint.keep_last=0"},
       "checkpoint.keep_last: must be >= 1, got 0"},
      {{"checkpoint.dir=/tmp/tern-never", "checkpoint.writer.block_size=1000"},
       "checkpoint.writer.block_size: 1000 must be a multiple of 4096"},
      {{"checkpoint.dir=/tmp/tern-never", "checkpoint.load=yesterday"},
       "checkpoint.load: 'yesterday' is neither"},
      {{"elastic.enabled=true", "elastic.max_nodes=3"},
       "elastic: train_batch_size 2 with train_micro_batch_size_per_gpu 2 and 1 rank(s) per node "
       "cannot be kept on 2, 3 node(s)"},
      {{"elastic.enabled=true", "elastic.keep=everything"},
       "elastic.keep: \"everything\" is not \"global_batch\" or \"micro_batch\""},
      {{"elastic.min_nodes=0"}, "elastic.min_nodes: must be >= 1, got 0"},
      {{"elastic.min_nodes=1", "elastic.max_nodes=0"},
       "elastic.max_nodes: 0 must be >= elastic.min_nodes 1"},
      {{"resources.threads_per_rank=0"}, "resources.threads_per_rank: must be >= 1, got 0"},
      {{"resources.ranks_per_node=0"}, "resources.ranks_per_node: must be >= 1, got 0"},
      {{"resources.nodes=0"}, "resources.nodes: must be >= 1, got 0"},
  };
}

// The message after `prefix` on the first line of `out` that has it ("" when none).
std::string MessageAfter(const std::string& out, const std::string& prefix) {
  const size_t at = out.find(prefix);
  if (at == std::string::npos) return "";
  const size_t begin = at + prefix.size();
  return out.substr(begin, out.find('\n', begin) - begin);
}

std::string SetArgs(const std::vector<std::string>& sets) {
  std::string args;
  for (const auto& s : sets) args += " --set '" + s + "'";
  return args;
}

class SpecPrograms : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(cluster_.dir()) / "spec";
    fs::create_directories(dir_);
    ASSERT_EQ(PrepareCorpus(dir_).code, 0);
    spec_ = (dir_ / "good.json").string();
    std::ofstream(spec_) << R"({"name": "good",
      "model": {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "max_position_embeddings": 64},
      "data": {"path": ")"
                         << (dir_ / "corpus").string() << R"(", "seq_len": 32},
      "train_micro_batch_size_per_gpu": 2, "train_iters": 2})";
    hf_config_ = (dir_ / "hf_config.json").string();
    std::ofstream(hf_config_) << R"({"model_type": "llama", "hidden_size": 64,
      "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64,
      "rope_scaling": {"type": "linear", "factor": 2.0}, "transformers_version": "4.40"})";
    ASSERT_TRUE(cluster_.StartTernd());
    stub_ = tern::v1::JobService::NewStub(
        grpc::CreateChannel(cluster_.address(), grpc::InsecureChannelCredentials()));
  }

  // ternd's answer to SubmitJob for the good spec with `sets` applied.
  grpc::Status Submit(const std::vector<std::string>& sets) {
    std::ifstream in(spec_);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    auto parsed = spec::ParseJobSpec(text, sets, spec_);
    EXPECT_TRUE(parsed.ok()) << parsed.status();
    tern::v1::SubmitJobRequest req;
    *req.mutable_spec() = *parsed;
    tern::v1::SubmitJobResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return stub_->SubmitJob(&ctx, req, &resp);
  }

  Cluster cluster_;
  fs::path dir_;
  std::string spec_, hf_config_;
  std::unique_ptr<tern::v1::JobService::Stub> stub_;
};

TEST_F(SpecPrograms, GoodSpecIsAcceptedEverywhere) {
  EXPECT_EQ(Tern("describe " + spec_).code, 0);
  EXPECT_TRUE(Submit({"name=good-sleep"}).ok());
}

TEST_F(SpecPrograms, EveryProgramRefusesTheSameBadSpecsWithTheSameMessage) {
  const auto cases = BadSpecs(hf_config_);
  ASSERT_GE(cases.size(), 25u);
  for (const auto& c : cases) {
    SCOPED_TRACE(c.expect);
    const std::string sets = SetArgs(c.sets);
    const Result train = Tern("train " + spec_ + sets + " --threads 1");
    const Result describe = Tern("describe " + spec_ + sets);
    const CliResult submit = cluster_.Tern({"submit", spec_, "--set", c.sets[0]});
    const grpc::Status rpc = Submit(c.sets);
    EXPECT_EQ(train.code, 2) << train.out;
    EXPECT_EQ(describe.code, 2) << describe.out;
    EXPECT_EQ(rpc.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << rpc.error_message();
    const std::string from_train = MessageAfter(train.out, "error: ");
    const std::string from_describe = MessageAfter(describe.out, "error: ");
    const std::string from_ternd = MessageAfter(rpc.error_message(), "invalid job spec: ");
    EXPECT_NE(from_train.find(c.expect), std::string::npos) << train.out;
    EXPECT_EQ(from_describe, from_train);
    EXPECT_EQ(from_ternd, from_train);
    if (c.sets.size() == 1) {  // `tern submit` refuses it before contacting ternd
      EXPECT_EQ(submit.code, 2) << submit.err;
      EXPECT_EQ(MessageAfter(submit.err, "tern submit: "), from_train);
    }
  }
}

TEST_F(SpecPrograms, TuningHintsAreAcceptedWithTheSameWarningEverywhere) {
  const std::string hint = "zero_optimization.allgather_bucket_size=1000";
  const std::string warning = "warning: zero_optimization.allgather_bucket_size: no effect yet";
  const Result describe = Tern("describe " + spec_ + " --set " + hint);
  EXPECT_EQ(describe.code, 0) << describe.out;
  EXPECT_NE(describe.out.find(warning), std::string::npos) << describe.out;
  const CliResult submit =
      cluster_.Tern({"submit", spec_, "--set", hint, "--set", "name=hint-sleep"});
  EXPECT_EQ(submit.code, 0) << submit.err;
  EXPECT_NE(submit.err.find(warning), std::string::npos) << submit.err;
}

}  // namespace
}  // namespace tern::testing
