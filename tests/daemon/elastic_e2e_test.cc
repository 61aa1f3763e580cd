// Elastic rounds with real ternd, tern-worker and rank processes: a job with elastic.enabled
// survives a lost worker (it continues on the one that remains, at the smaller world, keeping
// the global batch) and a killed rank (the round restarts), resuming from its newest complete
// checkpoint; the losses after each resume equal those of `tern train` resumed from the same
// checkpoint at the same layout.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/daemon/cluster_harness.h"

namespace tern::testing {
namespace {

using std::chrono::seconds;
namespace fs = std::filesystem;

std::vector<nlohmann::json> JsonLines(const std::string& text) {
  std::vector<nlohmann::json> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object()) out.push_back(j);
  }
  return out;
}

constexpr int kSteps = 48;  // long enough that a kill at step 5 lands mid-training

// A JSON integer that protobuf's JSON mapping may have printed as a string (int64).
int64_t Int(const nlohmann::json& j, const std::string& key) {
  if (!j.is_object() || !j.contains(key)) return 0;
  const auto& v = j[key];
  if (v.is_number()) return v.get<int64_t>();
  if (v.is_string()) return std::stoll(v.get<std::string>());
  return 0;
}

class ElasticE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(c_.StartTernd());
    CliResult prep = c_.PrepareCorpus();
    ASSERT_EQ(prep.code, 0) << prep.out << prep.err;
    spec_ = {{"name", "elastic"},
             {"model",
              {{"model_type", "llama"},
               {"hidden_size", 32},
               {"num_hidden_layers", 2},
               {"num_attention_heads", 4},
               {"max_position_embeddings", 32}}},
             {"data", {{"path", c_.dir() + "/corpus"}, {"seq_len", 32}}},
             {"train_micro_batch_size_per_gpu", 2},
             {"train_batch_size", 4},
             {"steps_per_print", 1},
             {"train_iters", kSteps},
             {"eval_interval", 0},
             // The schedule must not depend on the world: warmup then constant.
             {"scheduler", {{"type", "WarmupLR"}, {"params", {{"warmup_num_steps", 2}}}}},
             {"checkpoint", {{"interval", 1}, {"keep_last", 1000}}},
             {"elastic", {{"enabled", true}, {"min_nodes", 1}, {"max_nodes", 2}}},
             {"resources", {{"nodes", 2}, {"ranks_per_node", 1}, {"threads_per_rank", 1}}}};
  }

  // Submits the spec; returns the job id.
  std::string Submit() {
    std::ofstream(c_.dir() + "/elastic.json") << spec_.dump();
    CliResult r = c_.Tern({"submit", c_.dir() + "/elastic.json", "--json"});
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    return j.is_object() ? j.value("id", "") : "";
  }

  // Starts workers w1..wN (real ranks; workers_[i] is w<i+1>), submits the spec and waits
  // until rank 0 reported `step`. "" when the workers or the job did not come up.
  // `last_env` goes to the environment of the last worker (and its ranks).
  std::string StartJob(int workers, int step, const std::vector<std::string>& last_env = {}) {
    workers_.clear();
    for (int i = 1; i <= workers; ++i) {
      char name[16];  // (not "w" + std::to_string(i): GCC 12 warns -Wrestrict on it)
      std::snprintf(name, sizeof(name), "w%d", i);
      workers_.push_back(c_.AddWorker(name, 1, i == workers ? last_env : std::vector<std::string>{},
                                      "", "1s", "tern"));
    }
    if (!c_.WaitForWorkers(workers, seconds(10))) return "";
    submitted_batch_ = spec_["train_batch_size"].get<int>();
    const std::string id = Submit();
    if (!id.empty()) WaitForStep(id, step);
    return id;
  }

  nlohmann::json Show(const std::string& id) {
    return nlohmann::json::parse(c_.Tern({"show", id, "--json"}).out, nullptr, false);
  }

  // Waits until rank 0 reported `step` (or the job ended).
  void WaitForStep(const std::string& id, int step) {
    for (int i = 0; i < 600; ++i) {
      auto j = Show(id);
      if (j.is_object() &&
          (j.value("state", "") == "SUCCEEDED" || j.value("state", "") == "FAILED"))
        return;
      if (j.is_object() && j.contains("last_metric") && Int(j["last_metric"], "step") >= step)
        return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  std::string WaitForEnd(const std::string& id) {
    for (int i = 0; i < 1200; ++i) {
      auto j = Show(id);
      const std::string state = j.is_object() ? j.value("state", "") : "";
      if (state == "SUCCEEDED" || state == "FAILED" || state == "CANCELLED") return state;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return "TIMEOUT";
  }

  // The job's history: events and rank 0's step losses by (round, step).
  struct History {
    std::vector<nlohmann::json> events;
    std::map<int, std::map<int, double>> losses;  // round -> step -> loss
  };
  History Watch(const std::string& id) {
    History h;
    for (const auto& j : JsonLines(c_.Tern({"watch", id, "--json"}, "", seconds(30)).out)) {
      if (j.value("type", "") == "event") h.events.push_back(j);
      if (j.value("type", "") == "metric" && j.value("kind", "") == "step" &&
          j.value("rank", -1) == 0)
        h.losses[j["round"].get<int>()][j["step"].get<int>()] = j["loss"].get<double>();
    }
    return h;
  }

  static std::string Kinds(const History& h) {
    std::string s;
    for (const auto& e : h.events)
      s += e.value("kind", "") + ": " + e.value("message", "").substr(0, 160) + "\n";
    return s;
  }

  static int Count(const History& h, const std::string& kind) {
    int n = 0;
    for (const auto& e : h.events) n += e.value("kind", "") == kind ? 1 : 0;
    return n;
  }

  // The step the last round resumed from (its "resume" event).
  static int ResumedFrom(const History& h) {
    int step = -1;
    for (const auto& e : h.events) {
      if (e.value("kind", "") != "resume") continue;
      auto m = nlohmann::json::parse(e.value("message", ""), nullptr, false);
      if (m.is_object()) step = m.value("step", -1);
    }
    return step;
  }

  // `tern train` of the same spec on `ranks` ranks from a copy of the job's checkpoint at
  // `step`: rank 0's losses by step.
  std::map<int, double> Reference(const std::string& id, int step, int ranks) {
    const std::string src = c_.checkpoint_root() + "/" + id;
    const std::string copy = c_.dir() + "/ref-" + std::to_string(step);
    fs::create_directories(copy);
    const std::string name =
        "step-" + std::string(6 - std::to_string(step).size(), '0') + std::to_string(step);
    fs::copy(src + "/" + name, copy + "/" + name, fs::copy_options::recursive);
    nlohmann::json spec = spec_;
    spec.erase("elastic");
    spec["resources"] = {{"nodes", 1}, {"ranks_per_node", 1}, {"threads_per_rank", 1}};
    spec["checkpoint"]["dir"] = copy;
    std::ofstream(c_.dir() + "/ref.json") << spec.dump();
    std::vector<std::string> args = {"train", c_.dir() + "/ref.json",    "--json",    "--resume",
                                     "--set", "checkpoint.load=" + name, "--threads", "1"};
    if (ranks > 1) args.insert(args.end(), {"--ranks", std::to_string(ranks)});
    CliResult r = c_.Tern(args, "", seconds(120));
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    std::map<int, double> out;
    for (const auto& j : JsonLines(r.out))
      if (j.value("type", "") == "step") out[j["step"].get<int>()] = j["loss"].get<double>();
    return out;
  }

  void ExpectSameLosses(const std::map<int, double>& got, const std::map<int, double>& ref,
                        int from) {
    ASSERT_FALSE(ref.empty());
    for (int s = from; s <= spec_["train_iters"].get<int>(); ++s) {
      ASSERT_TRUE(got.count(s)) << "step " << s << " missing";
      ASSERT_TRUE(ref.count(s)) << "reference step " << s << " missing";
      EXPECT_NEAR(got.at(s), ref.at(s), 1e-5 * std::abs(ref.at(s))) << "step " << s;
    }
  }

  // Round 2 resumed from a checkpoint at step >= `min_from` (so at most the step in flight was
  // lost), ran to the last step, and its losses are those of `tern train` on `ranks` ranks
  // resumed from the same checkpoint.
  // The data position of every committed checkpoint of the job: the samples consumed are the
  // global batch of each step taken, summed across the rounds: `from` steps at the submitted
  // batch, then the current spec's (no sample skipped or repeated).
  void ExpectDataPositionsContinue(const std::string& id, int from) {
    int manifests = 0;
    for (const auto& d : fs::directory_iterator(c_.checkpoint_root() + "/" + id, ec_)) {
      const std::string name = d.path().filename().string();
      if (name.rfind("step-", 0) != 0 || !fs::exists(d.path() / "manifest.json")) continue;
      auto m =
          nlohmann::json::parse(c_.ReadFile((d.path() / "manifest.json").string()), nullptr, false);
      ASSERT_TRUE(m.is_object()) << name;
      const int step = std::stoi(name.substr(5));
      const auto& pos = m["extra"]["data_position"];
      const int64_t now = spec_["train_batch_size"].get<int>();
      const int64_t want = step <= from ? int64_t{step} * submitted_batch_
                                        : int64_t{from} * submitted_batch_ + (step - from) * now;
      EXPECT_EQ(pos.value("samples_consumed", int64_t{-1}), want) << name << ": " << pos;
      ++manifests;
    }
    EXPECT_GT(manifests, 0);
  }

  void ExpectRound2LikeTernTrain(History& h, const std::string& id, int ranks, int min_from) {
    const int from = ResumedFrom(h);
    ASSERT_GE(from, min_from) << "resumed from step " << from;
    const auto& round2 = h.losses[2];
    ASSERT_FALSE(round2.empty());
    EXPECT_EQ(round2.begin()->first, from + 1);
    EXPECT_EQ(round2.rbegin()->first, spec_["train_iters"].get<int>());
    ExpectSameLosses(round2, Reference(id, from, ranks), from + 1);
    ExpectDataPositionsContinue(id, from);
  }

  // The round was stopped on an order: its ranks checkpointed the last step they trained and
  // the next round resumed from exactly that step (no step lost, none repeated). (That the
  // ordered checkpoint does not depend on checkpoint.interval is rank_control_test's.)
  static void ExpectNoStepLost(History& h) {
    ASSERT_EQ(Count(h, "stopped"), 1);
    int stopped = -1;
    for (const auto& e : h.events) {
      if (e.value("kind", "") != "stopped") continue;
      auto m = nlohmann::json::parse(e.value("message", ""), nullptr, false);
      if (m.is_object()) stopped = m.value("step", -1);
    }
    ASSERT_GT(stopped, 0);
    ASSERT_FALSE(h.losses[1].empty());
    EXPECT_EQ(h.losses[1].rbegin()->first, stopped);
    EXPECT_EQ(ResumedFrom(h), stopped);
  }

  Cluster c_{
      ClusterOptions{.heartbeat_timeout = "2s", .reconnect_grace = "3s", .checkpoint_root = true}};
  nlohmann::json spec_;
  std::vector<Process*> workers_;
  std::error_code ec_;
  int submitted_batch_ = 0;  // train_batch_size at submission
};

TEST_F(ElasticE2E, LostWorkerContinuesOnTheOtherAtTheSmallerWorld) {
  const std::string id = StartJob(2, 5);
  ASSERT_FALSE(id.empty());
  Process* w2 = workers_[1];
  w2->Signal(SIGKILL);  // the node is gone: its rank dies with it
  ASSERT_EQ(WaitForEnd(id), "SUCCEEDED")
      << c_.Tern({"show", id}).out << c_.ReadFile(c_.dir() + "/w1.log");
  History h = Watch(id);
  SCOPED_TRACE(Kinds(h));
  EXPECT_EQ(Count(h, "node_lost"), 1);
  EXPECT_EQ(Count(h, "round_stopped"), 1);
  EXPECT_EQ(Count(h, "reshard"), 1);
  auto job = Show(id);
  EXPECT_EQ(Int(job, "round"), 2) << job;
  EXPECT_EQ(Int(job, "world_size"), 1) << job;
  // `tern show` carries the incident: its cause, and at most the step in flight lost.
  ASSERT_TRUE(job.contains("incidents") && job["incidents"].size() == 1u) << job;
  // (The survivor's failed collective may report first: rank_exit, else node_lost.)
  const std::string cause = job["incidents"][0].value("cause", "");
  EXPECT_TRUE(cause == "node_lost" || cause == "rank_exit") << job;
  EXPECT_LE(Int(job["incidents"][0], "steps_lost"), 1) << job;
  EXPECT_GT(job["incidents"][0].value("resume_s", -1.0), 0) << job;
  EXPECT_NE(c_.Tern({"show", id}).out.find("incident: " + cause + " in round 1"),
            std::string::npos);
  for (const auto& e : h.events) {
    if (e.value("kind", "") != "reshard") continue;
    auto plan = nlohmann::json::parse(e.value("message", ""), nullptr, false);
    EXPECT_EQ(plan.value("from_world", 0), 2) << plan;
    EXPECT_EQ(plan.value("to_world", 0), 1) << plan;
    EXPECT_EQ(plan.value("gradient_accumulation_steps", 0), 2) << plan;
  }
  ExpectRound2LikeTernTrain(h, id, 1, 3);
}

// elastic.keep=micro_batch: the surviving node keeps micro batch and accumulation, so the
// global batch halves (4 -> 2); the checkpoint's samples consumed keep the data exact, and
// round 2 is `tern train` with the halved batch resumed from the same checkpoint.
TEST_F(ElasticE2E, KeepMicroBatchHalvesTheGlobalBatchOnTheSmallerWorld) {
  spec_["elastic"]["keep"] = "micro_batch";
  const std::string id = StartJob(2, 5);
  ASSERT_FALSE(id.empty());
  workers_[1]->Signal(SIGKILL);
  ASSERT_EQ(WaitForEnd(id), "SUCCEEDED") << c_.Tern({"show", id}).out;
  History h = Watch(id);
  SCOPED_TRACE(Kinds(h));
  ASSERT_EQ(Count(h, "reshard"), 1);
  for (const auto& e : h.events) {
    if (e.value("kind", "") != "reshard") continue;
    auto plan = nlohmann::json::parse(e.value("message", ""), nullptr, false);
    EXPECT_EQ(plan.value("to_world", 0), 1) << plan;
    EXPECT_EQ(plan.value("gradient_accumulation_steps", 0), 1) << plan;
    EXPECT_EQ(plan.value("train_batch_size", 0), 2) << plan;
  }
  spec_["train_batch_size"] = 2;
  ExpectRound2LikeTernTrain(h, id, 1, 3);
}

TEST_F(ElasticE2E, KilledRankRestartsTheRoundAtTheSameWorld) {
  const std::string id = StartJob(2, 5);
  ASSERT_FALSE(id.empty());
  Process* w1 = workers_[0];
  // SIGKILL the rank process of worker w1 (a child of the worker), not the worker.
  // (Any thread of the worker may have forked it.)
  std::string children;
  for (const auto& t : fs::directory_iterator("/proc/" + std::to_string(w1->pid()) + "/task"))
    children += c_.ReadFile(t.path().string() + "/children") + " ";
  std::istringstream pids(children);
  int rank_pid = 0;
  ASSERT_TRUE(static_cast<bool>(pids >> rank_pid)) << "worker w1 runs no rank";
  ::kill(rank_pid, SIGKILL);
  ASSERT_EQ(WaitForEnd(id), "SUCCEEDED") << c_.Tern({"show", id}).out;
  History h = Watch(id);
  SCOPED_TRACE(Kinds(h));
  EXPECT_EQ(Count(h, "round_stopped"), 1);
  for (const auto& e : h.events) {
    if (e.value("kind", "") == "round_stopped") {
      EXPECT_NE(e.value("message", "").find("exited with code"), std::string::npos) << e;
    }
  }
  auto job = Show(id);
  EXPECT_EQ(Int(job, "round"), 2) << job;
  EXPECT_EQ(Int(job, "world_size"), 2) << job;
  ExpectRound2LikeTernTrain(h, id, 2, 3);
}

TEST_F(ElasticE2E, AWorkerJoiningGrowsTheJobToMaxNodes) {
  spec_["resources"]["nodes"] = 1;  // starts on one node, may grow to two
  spec_["train_iters"] = 60;        // long enough for a worker to join
  const std::string id = StartJob(1, 4);
  ASSERT_FALSE(id.empty());
  c_.AddWorker("w2", 1, {}, "", "1s", "tern");
  ASSERT_EQ(WaitForEnd(id), "SUCCEEDED") << c_.Tern({"show", id}).out;
  History h = Watch(id);
  SCOPED_TRACE(Kinds(h));
  EXPECT_EQ(Count(h, "grow"), 1) << c_.ReadFile(c_.dir() + "/ternd.0.log");
  auto job = Show(id);
  EXPECT_EQ(Int(job, "round"), 2) << job;
  EXPECT_EQ(Int(job, "world_size"), 2) << job;
  EXPECT_EQ(Int(job, "restarts"), 0) << job;  // growing is not a failure
  ExpectNoStepLost(h);
  ExpectRound2LikeTernTrain(h, id, 2, 4);
}

TEST_F(ElasticE2E, AWorkerKilledWhileWritingACheckpointResumesFromThePreviousOne) {
  spec_["checkpoint"]["interval"] = 4;
  // w2's rank blocks in its second shard write (step 8) as a node dying mid-write would.
  const std::string id = StartJob(2, 1, {"TERN_CKPT_FAULT=after_shard_write@2:hang"});
  ASSERT_FALSE(id.empty());
  bool hanging = false;
  for (int i = 0; i < 600 && !hanging; ++i) {
    for (const auto& f : fs::directory_iterator(c_.dir() + "/w2/" + id, ec_))
      if (f.path().extension() == ".log" &&
          c_.ReadFile(f.path().string()).find("after_shard_write: hanging") != std::string::npos)
        hanging = true;
    if (!hanging) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(hanging) << c_.Tern({"show", id}).out;
  workers_[1]->Signal(SIGKILL);  // the node dies while step 8 is being written
  ASSERT_EQ(WaitForEnd(id), "SUCCEEDED") << c_.Tern({"show", id}).out;
  History h = Watch(id);
  SCOPED_TRACE(Kinds(h));
  EXPECT_GE(h.losses[1].rbegin()->first, 8);  // round 1 got past step 8 ...
  EXPECT_EQ(ResumedFrom(h), 4);               // ... but step 8 never committed
  EXPECT_EQ(Int(Show(id), "world_size"), 1);
  ExpectRound2LikeTernTrain(h, id, 1, 4);
}

TEST_F(ElasticE2E, TerndRestartedWhileReshardingRecoversTheJobOnce) {
  const std::string id = StartJob(2, 5);
  ASSERT_FALSE(id.empty());
  Process* w2 = workers_[1];
  w2->Signal(SIGKILL);
  // The survivor's collective fails at once; ternd then waits (up to the heartbeat timeout)
  // for w2's rank to be gone: kill ternd in that window and start it again.
  bool resharding = false;
  for (int i = 0; i < 500 && !resharding; ++i) {
    resharding = Show(id).value("state", "") == "RESHARDING";
    if (!resharding) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(resharding) << Show(id);
  c_.KillTernd(SIGKILL);
  ASSERT_TRUE(c_.StartTernd());
  ASSERT_EQ(WaitForEnd(id), "SUCCEEDED") << c_.Tern({"show", id}).out;
  auto jobs = nlohmann::json::parse(c_.Tern({"jobs", "--json"}).out, nullptr, false);
  ASSERT_TRUE(jobs.is_object() && jobs.contains("jobs")) << jobs;
  EXPECT_EQ(jobs["jobs"].size(), 1u) << jobs;  // neither lost nor duplicated
  auto job = Show(id);
  EXPECT_EQ(Int(job, "round"), 2) << job;
  EXPECT_EQ(Int(job, "world_size"), 1) << job;
  History h = Watch(id);
  SCOPED_TRACE(Kinds(h));
  EXPECT_EQ(Count(h, "reshard"), 1);
  EXPECT_EQ(h.losses[2].rbegin()->first, kSteps);
}

TEST_F(ElasticE2E, SigtermToAWorkerDrainsItAndTheJobContinuesOnTheOther) {
  spec_["train_iters"] = 60;  // still training when the order arrives
  const std::string id = StartJob(2, 5);
  ASSERT_FALSE(id.empty());
  Process* w2 = workers_[1];
  w2->Signal(SIGTERM);                  // a preemption notice: the node is going away
  EXPECT_EQ(w2->Wait(seconds(30)), 0);  // it drained: ternd moved the job, then it exited
  ASSERT_EQ(WaitForEnd(id), "SUCCEEDED") << c_.Tern({"show", id}).out;
  History h = Watch(id);
  SCOPED_TRACE(Kinds(h));
  EXPECT_EQ(Count(h, "preempted"), 1);
  EXPECT_EQ(Count(h, "reshard"), 1);
  auto job = Show(id);
  EXPECT_EQ(Int(job, "world_size"), 1) << job;
  EXPECT_EQ(Int(job, "restarts"), 0) << job;  // a preemption is not a failure
  ExpectNoStepLost(h);
  ExpectRound2LikeTernTrain(h, id, 1, 5);
}

TEST_F(ElasticE2E, TernDrainMovesTheJobOffAWorker) {
  spec_["train_iters"] = 60;  // still training when the order arrives
  const std::string id = StartJob(2, 5);
  ASSERT_FALSE(id.empty());
  CliResult drain = c_.Tern({"drain", "w2", "--reason", "maintenance", "--json"});
  ASSERT_EQ(drain.code, 0) << drain.out << drain.err;
  EXPECT_EQ(nlohmann::json::parse(drain.out, nullptr, false)["jobs"].size(), 1u) << drain.out;
  ASSERT_EQ(WaitForEnd(id), "SUCCEEDED") << c_.Tern({"show", id}).out;
  History h = Watch(id);
  SCOPED_TRACE(Kinds(h));
  EXPECT_EQ(Count(h, "preempted"), 1);
  EXPECT_EQ(Int(Show(id), "world_size"), 1);  // nothing new was placed on the drained worker
  ExpectNoStepLost(h);
  auto job = Show(id);
  ASSERT_TRUE(job.contains("incidents") && job["incidents"].size() == 1u) << job;
  EXPECT_EQ(job["incidents"][0].value("cause", ""), "preempted") << job;
  EXPECT_EQ(Int(job["incidents"][0], "steps_lost"), 0) << job;
  CliResult unknown = c_.Tern({"drain", "nobody"});
  EXPECT_NE(unknown.code, 0);
  EXPECT_NE((unknown.out + unknown.err).find("no connected worker nobody"), std::string::npos)
      << unknown.out << unknown.err;
}

TEST_F(ElasticE2E, WithoutElasticALostWorkerFailsTheJob) {
  spec_.erase("elastic");
  const std::string id = StartJob(2, 3);
  ASSERT_FALSE(id.empty());
  Process* w2 = workers_[1];
  w2->Signal(SIGKILL);
  EXPECT_EQ(WaitForEnd(id), "FAILED");
  EXPECT_EQ(Count(Watch(id), "reshard"), 0);
}

}  // namespace
}  // namespace tern::testing
