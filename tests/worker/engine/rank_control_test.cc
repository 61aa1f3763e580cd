// RankControl (the launcher's orders to a running rank) and the trainer's agreement on them:
// two ranks stop after the same step with that step's checkpoint committed, however late one
// of them receives the order, and a run resumed from it continues exactly where the
// uninterrupted run would be.
#include "worker/engine/rank_control.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "nlohmann/json.hpp"
#include "tests/worker/engine/tern_cli.h"
#include "worker/comm/in_memory_store.h"
#include "worker/engine/rank_runner.h"
#include "worker/spec/spec.h"

namespace tern::engine {
namespace {

namespace fs = std::filesystem;

TEST(RankControl, StopAndCheckpointOrdersSetTheirFlags) {
  RankControl c(3);
  EXPECT_FALSE(c.stop_requested());
  ASSERT_TRUE(c.Apply(R"({"op": "checkpoint", "round": 3, "reason": "r"})").ok());
  EXPECT_TRUE(c.checkpoint_requested());
  EXPECT_FALSE(c.stop_requested());
  c.clear_checkpoint();
  EXPECT_FALSE(c.checkpoint_requested());
  ASSERT_TRUE(c.Apply(R"({"op": "stop", "round": 3, "reason": "grow"})").ok());
  EXPECT_TRUE(c.stop_requested());
  EXPECT_EQ(c.reason(), "grow");
  EXPECT_EQ(c.stopped_step(), -1);
}

TEST(RankControl, AnOrderForAnotherRoundIsIgnored) {
  RankControl c(4);
  ASSERT_TRUE(c.Apply(R"({"op": "stop", "round": 3})").ok());
  EXPECT_FALSE(c.stop_requested());
  RankControl any;  // no round: every order applies
  ASSERT_TRUE(any.Apply(R"({"op": "stop", "round": 3})").ok());
  EXPECT_TRUE(any.stop_requested());
}

TEST(RankControl, MalformedOrdersAreRefusedByName) {
  RankControl c(1);
  for (const char* bad : {"not json", "[1]", R"({"round": 1})", R"({"op": 7})",
                          R"({"op": "explode"})", R"({"op": "stop", "round": "x"})"}) {
    absl::Status st = c.Apply(bad);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_NE(c.Apply(R"({"op": "explode"})").message().find("unknown op \"explode\""),
            std::string_view::npos);
  EXPECT_FALSE(c.stop_requested());
  EXPECT_FALSE(c.Apply(std::string(5000, ' ')).ok());
}

TEST(RankControl, AbortRunsTheHandler) {
  RankControl c(2);
  std::string got;
  c.set_on_abort([&](const std::string& reason) { got = reason; });
  ASSERT_TRUE(c.Apply(R"({"op": "abort", "round": 2, "reason": "peer lost"})").ok());
  EXPECT_EQ(got, "peer lost");
}

// With a control channel, SIGTERM (a batch system signalling every process of a job) is a
// "stop": checkpoint after the agreed step; a second SIGTERM exits at once.
TEST(RankControlDeathTest, SigtermRequestsAStopAndASecondOneExits) {
  EXPECT_EXIT(
      {
        RankControl* c = new RankControl(1);
        c->InstallSigtermAsStop();
        ::raise(SIGTERM);
        if (!c->stop_requested() || c->reason() != "SIGTERM") ::_exit(3);
        // A stop order before the signal does not count as the first SIGTERM.
        ::raise(SIGTERM);
        ::_exit(4);  // not reached
      },
      ::testing::ExitedWithCode(kExitAborted), "SIGTERM again: exiting now");
  EXPECT_EXIT(
      {
        RankControl* c = new RankControl(1);
        c->InstallSigtermAsStop();
        if (!c->Apply(R"({"op": "stop", "round": 1})").ok()) ::_exit(3);
        ::raise(SIGTERM);  // the first SIGTERM: still only a stop
        ::_exit(c->stop_requested() && c->reason() == "SIGTERM" ? 0 : 5);
      },
      ::testing::ExitedWithCode(0), "checkpointing after the current step");
}

TEST(RankControl, TheReaderAppliesLinesFromAFileDescriptor) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  RankControl* c = new RankControl(5);  // outlives its detached reader
  c->StartReader(fds[0]);
  const std::string lines =
      "garbage\n{\"op\": \"checkpoint\", \"round\": 4}\n{\"op\": \"stop\", \"round\": 5}\n";
  ASSERT_EQ(::write(fds[1], lines.data(), lines.size()), static_cast<ssize_t>(lines.size()));
  for (int i = 0; i < 200 && !c->stop_requested(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(c->stop_requested());
  EXPECT_FALSE(c->checkpoint_requested());  // round 4's order was for another round
  ::close(fds[1]);                          // EOF ends the reader
}

// Collects rank 0's step losses and events; on `trigger_step` applies `order` to `target`.
class Sink : public MetricsSink {
 public:
  void OnStep(const StepMetrics& m) override {
    std::lock_guard<std::mutex> lock(mu_);
    losses[m.step] = m.loss;
    if (target && m.step == trigger_step) {
      ASSERT_TRUE(target->Apply(order).ok());
    }
  }
  void OnEval(int64_t, double) override {}
  void OnSummary(const TrainSummary&) override { summary = true; }
  void OnEvent(const std::string& kind, const std::string& message) override {
    std::lock_guard<std::mutex> lock(mu_);
    events[kind].push_back(nlohmann::json::parse(message, nullptr, false));
  }
  std::map<int64_t, double> losses;
  std::map<std::string, std::vector<nlohmann::json>> events;
  bool summary = false;
  RankControl* target = nullptr;
  int64_t trigger_step = 0;
  std::string order;
  std::mutex mu_;
};

class RankControlTraining : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("tern-control-" + std::to_string(getpid())));
    fs::create_directories(*dir_);
    auto r = tern::testing::PrepareCorpus(*dir_);
    ASSERT_EQ(r.code, 0) << r.out;
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }

  static spec::JobConfig Config(const std::string& ckpt, bool resume) {
    nlohmann::json j = {{"model",
                         {{"model_type", "llama"},
                          {"hidden_size", 32},
                          {"num_hidden_layers", 2},
                          {"num_attention_heads", 4}}},
                        {"data", {{"path", (*dir_ / "corpus").string()}, {"seq_len", 32}}},
                        {"train_micro_batch_size_per_gpu", 2},
                        {"train_batch_size", 4},
                        {"train_iters", 10},
                        {"eval_iters", 0},
                        {"zero_optimization", {{"stage", 3}}},
                        {"checkpoint", {{"dir", (*dir_ / ckpt).string()}, {"interval", 100}}}};
    if (resume) j["checkpoint"]["load"] = "latest";
    auto s = spec::ParseJobSpec(j.dump(), {}, "test");
    EXPECT_TRUE(s.ok()) << s.status();
    spec::ResolveOptions ro;
    ro.world_size = 2;
    auto cfg = spec::ResolveJob(*s, ro);
    EXPECT_TRUE(cfg.ok()) << cfg.status();
    return *cfg;
  }

  // Two ranks as threads; sinks[0] gets rank 0's metrics.
  static void Run(const spec::JobConfig& cfg, RankControl* controls, Sink* sink0,
                  int64_t round = -1) {
    comm::InMemoryStore store;
    Sink other;
    std::vector<std::thread> ranks;
    absl::Status st[2];
    for (int r = 0; r < 2; ++r) {
      ranks.emplace_back([&, r] {
        RankOptions o;
        o.rank = r;
        o.world_size = 2;
        o.ranks_per_node = 2;
        o.prefix = "job";
        o.sink = r == 0 ? static_cast<MetricsSink*>(sink0) : &other;
        o.check_memory = false;
        o.peak_gflops = 1;
        o.round = round;
        o.control = controls ? &controls[r] : nullptr;
        st[r] = RunRank(cfg, store, o);
      });
    }
    for (auto& t : ranks) t.join();
    ASSERT_TRUE(st[0].ok()) << st[0];
    ASSERT_TRUE(st[1].ok()) << st[1];
  }

  static fs::path* dir_;
};
fs::path* RankControlTraining::dir_ = nullptr;

TEST_F(RankControlTraining, RanksStopAfterTheSameStepWithItsCheckpointAndResumeExactly) {
  Sink full;
  Run(Config("full", false), nullptr, &full);
  ASSERT_EQ(full.losses.size(), 10u);

  // Only rank 1 gets the order, when rank 0 reports step 4: rank 1 sees it after step 4 or 5;
  // both must stop after the same step.
  RankControl controls[2] = {RankControl(7), RankControl(7)};
  Sink first;
  first.target = &controls[1];
  first.trigger_step = 4;
  first.order = R"({"op": "stop", "round": 7, "reason": "grow"})";
  Run(Config("stopped", false), controls, &first, 7);
  const int64_t at = controls[0].stopped_step();
  ASSERT_GE(at, 4);
  ASSERT_LT(at, 10);
  EXPECT_EQ(controls[1].stopped_step(), at);
  EXPECT_FALSE(first.summary);  // a stopped round is not a finished job
  ASSERT_EQ(first.events["stopped"].size(), 1u);
  EXPECT_EQ(first.events["stopped"][0].value("step", -1), at);
  EXPECT_EQ(first.losses.rbegin()->first, at);
  char name[32];
  std::snprintf(name, sizeof(name), "step-%06lld", static_cast<long long>(at));
  EXPECT_TRUE(fs::exists(*dir_ / "stopped" / name / "manifest.json"))
      << "the step it stopped after is committed";

  Sink rest;
  Run(Config("stopped", true), nullptr, &rest, 8);
  ASSERT_FALSE(rest.losses.empty());
  EXPECT_EQ(rest.losses.begin()->first, at + 1);  // no step lost, none repeated
  EXPECT_EQ(rest.losses.rbegin()->first, 10);
  for (int64_t s = 1; s <= at; ++s) EXPECT_EQ(first.losses.at(s), full.losses.at(s)) << s;
  for (int64_t s = at + 1; s <= 10; ++s) EXPECT_EQ(rest.losses.at(s), full.losses.at(s)) << s;
}

TEST_F(RankControlTraining, ACheckpointOrderCheckpointsTheAgreedStepAndTrainingGoesOn) {
  RankControl controls[2] = {RankControl(), RankControl()};
  Sink run;
  run.target = &controls[0];
  run.trigger_step = 3;
  run.order = R"({"op": "checkpoint"})";
  Run(Config("ordered", false), controls, &run);
  EXPECT_EQ(run.losses.size(), 10u);
  EXPECT_TRUE(run.summary);
  EXPECT_EQ(controls[0].stopped_step(), -1);
  // Step 4 is the first the ranks can agree on (rank 0 applied it after reporting step 3).
  int ordered = 0;
  for (const auto& e : fs::directory_iterator(*dir_ / "ordered")) {
    const std::string n = e.path().filename().string();
    if (n.rfind("step-", 0) == 0 && n != "step-000010") {
      EXPECT_EQ(n, "step-000004");
      ++ordered;
    }
  }
  EXPECT_EQ(ordered, 1);
}

}  // namespace
}  // namespace tern::engine
