// End-to-end: real ternd + tern-worker processes (fake ranks) driven through the `tern` CLI.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "tests/daemon/cluster_harness.h"
#include "worker/core/cpu_set.h"

namespace tern::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::vector<nlohmann::json> JsonLines(const std::string& text) {
  std::vector<nlohmann::json> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded()) out.push_back(j);
  }
  return out;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Pids of the fake ranks of a job, from their logs under the worker scratch dirs.
std::vector<int> RankPids(Cluster& c, const std::string& job,
                          const std::vector<std::string>& workers, int world) {
  std::vector<int> pids;
  std::regex re("pid ([0-9]+)");
  for (const auto& w : workers) {
    for (int r = 0; r < world; ++r) {
      std::string log =
          c.ReadFile(c.dir() + "/" + w + "/" + job + "/rank-" + std::to_string(r) + ".log");
      std::smatch m;
      if (std::regex_search(log, m, re)) pids.push_back(std::stoi(m[1]));
    }
  }
  return pids;
}

class ClusterTest : public ::testing::Test {
 protected:
  void StartTwoWorkers(Cluster& c, const std::vector<std::string>& env = {"FAKE_RANK_STEP_MS=40"}) {
    ASSERT_TRUE(c.StartTernd());
    c.AddWorker("w1", 2, env);
    c.AddWorker("w2", 2, env);
    ASSERT_TRUE(c.WaitForWorkers(2, seconds(10)));
  }
};

TEST_F(ClusterTest, TwoWorkerJobSucceedsWithMetricsRelayed) {
  Cluster c;
  StartTwoWorkers(c);
  const std::string spec = c.WriteSpec("smoke", 6, 2, 2);
  CliResult r = c.Tern({"submit", spec, "--watch", "--json"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  auto lines = JsonLines(r.out);
  ASSERT_GE(lines.size(), 3u);
  const std::string id = lines[0]["id"];
  std::vector<double> losses;
  std::set<std::string> kinds;
  for (const auto& j : lines) {
    if (j.value("type", "") != "metric") continue;
    EXPECT_GT(j["time_ms"].get<int64_t>(), 0);
    EXPECT_EQ(j["rank"], 0);  // only rank 0's metrics are relayed
    kinds.insert(j["kind"].get<std::string>());
    if (j["kind"] == "step") losses.push_back(j["loss"].get<double>());
  }
  ASSERT_EQ(losses.size(), 6u);
  for (size_t i = 1; i < losses.size(); ++i) EXPECT_LT(losses[i], losses[i - 1]);
  EXPECT_EQ(kinds, (std::set<std::string>{"eval", "step", "summary"}));
  EXPECT_EQ(lines.back()["type"], "event");
  EXPECT_EQ(lines.back()["state"], "SUCCEEDED");

  CliResult show = c.Tern({"show", id, "--json"});
  ASSERT_EQ(show.code, 0) << show.err;
  auto job = nlohmann::json::parse(show.out);
  EXPECT_EQ(job["state"], "SUCCEEDED");
  EXPECT_EQ(job["world_size"], 4);
  EXPECT_EQ(job["placement"].size(), 4u);
  EXPECT_EQ(job["last_metric"]["step"], "6");  // int64 in proto JSON is a string

  CliResult logs = c.Tern({"logs", id, "--rank", "3"});
  ASSERT_EQ(logs.code, 0) << logs.err;
  EXPECT_NE(logs.out.find("fake rank 3 of 4"), std::string::npos) << logs.out;
  EXPECT_NE(logs.out.find("fake rank 3 done"), std::string::npos) << logs.out;
  // The log holds `tern train`'s lines for what the rank printed as JSON.
  EXPECT_NE(logs.out.find("step      6/6      | loss "), std::string::npos) << logs.out;
  EXPECT_EQ(logs.out.find("\"type\""), std::string::npos) << logs.out;

  // Watching the finished job replays it in words: the summary at the job's last step.
  CliResult watch = c.Tern({"watch", id});
  ASSERT_EQ(watch.code, 0) << watch.out << watch.err;
  EXPECT_NE(watch.out.find("summary at step 6: done: "), std::string::npos) << watch.out;
  EXPECT_NE(watch.out.find("eval at step 6: val_loss 2.5000"), std::string::npos) << watch.out;

  CliResult jobs = c.Tern({"jobs", "--json"});
  auto list = nlohmann::json::parse(jobs.out);
  ASSERT_EQ(list["jobs"].size(), 1u);
  EXPECT_EQ(list["jobs"][0]["id"], id);
  EXPECT_EQ(list["jobs"][0]["state"], "SUCCEEDED");
}

TEST_F(ClusterTest, TwoConcurrentWatchersGetTheSameStream) {
  Cluster c;
  StartTwoWorkers(c, {"FAKE_RANK_STEP_MS=100"});
  CliResult sub = c.Tern({"submit", c.WriteSpec("watched", 8, 2, 1)});
  ASSERT_EQ(sub.code, 0) << sub.err;
  const std::string id = Trim(sub.out);
  auto w1 = c.TernAsync({"watch", id, "--json"}, c.dir() + "/watch1.out");
  auto w2 = c.TernAsync({"watch", id, "--json"}, c.dir() + "/watch2.out");
  ASSERT_EQ(w1->Wait(seconds(20)), 0);
  ASSERT_EQ(w2->Wait(seconds(20)), 0);
  auto a = JsonLines(c.ReadFile(c.dir() + "/watch1.out"));
  auto b = JsonLines(c.ReadFile(c.dir() + "/watch2.out"));
  ASSERT_GT(a.size(), 10u);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 1; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << "item " << i;  // [0]: snapshot
  int steps = 0;
  for (const auto& j : a) steps += j.value("kind", "") == "step" ? 1 : 0;
  EXPECT_EQ(steps, 8);
}

TEST_F(ClusterTest, CancelStopsEveryRankWithinTheGracePeriod) {
  Cluster c;
  ASSERT_TRUE(c.StartTernd());
  c.AddWorker("w1", 2, {}, "", "1s");
  c.AddWorker("w2", 2, {}, "", "1s");
  ASSERT_TRUE(c.WaitForWorkers(2, seconds(10)));
  // One job whose ranks exit on SIGTERM, one whose ranks ignore it (SIGKILL after 1 s).
  CliResult s1 = c.Tern({"submit", c.WriteSpec("sleep", 100, 2, 1)});
  CliResult s2 = c.Tern({"submit", c.WriteSpec("ignore-term", 100, 2, 1)});
  ASSERT_EQ(s1.code, 0) << s1.err;
  ASSERT_EQ(s2.code, 0) << s2.err;
  const std::string j1 = Trim(s1.out), j2 = Trim(s2.out);
  std::vector<int> pids;
  const auto end = std::chrono::steady_clock::now() + seconds(10);
  while (pids.size() < 4 && std::chrono::steady_clock::now() < end) {
    pids = RankPids(c, j1, {"w1", "w2"}, 2);
    auto more = RankPids(c, j2, {"w1", "w2"}, 2);
    pids.insert(pids.end(), more.begin(), more.end());
    std::this_thread::sleep_for(milliseconds(50));
  }
  ASSERT_EQ(pids.size(), 4u);
  for (int pid : pids) EXPECT_EQ(::kill(pid, 0), 0) << "rank pid " << pid << " not running";
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(c.Tern({"cancel", j1}).code, 0);
  ASSERT_EQ(c.Tern({"cancel", j2}).code, 0);
  bool all_gone = false;
  while (!all_gone && std::chrono::steady_clock::now() - t0 < milliseconds(2500)) {
    all_gone = true;
    for (int pid : pids) all_gone &= ::kill(pid, 0) != 0;
    std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_TRUE(all_gone) << "ranks still alive 2.5 s after cancel with a 1 s grace";
  CliResult w = c.Tern({"watch", j2});
  EXPECT_EQ(w.code, 3) << w.out << w.err;
  EXPECT_NE(w.out.find("CANCELLED"), std::string::npos);
  // Cancelling again is refused.
  CliResult again = c.Tern({"cancel", j1});
  EXPECT_EQ(again.code, 2);
  EXPECT_NE(again.err.find("already CANCELLED"), std::string::npos) << again.err;
}

TEST_F(ClusterTest, RankFailureFailsTheJobAndNamesRankAndCode) {
  Cluster c;
  StartTwoWorkers(c);
  CliResult r = c.Tern({"submit", c.WriteSpec("will-fail", 20, 2, 2), "--watch"});
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("rank 3 on worker w2 exited with code 3"), std::string::npos) << r.out;
}

TEST_F(ClusterTest, BadSpecsAreRefusedWithEveryField) {
  Cluster c;
  ASSERT_TRUE(c.StartTernd());
  const std::string spec = c.WriteSpec("bad", 5, 1, 1);
  CliResult r = c.Tern({"submit", spec, "--set", "train_iters=0", "--set", "model.n_head=5",
                        "--set", "zero_optimization.stage=7", "--set", "resources.nodes=0"});
  EXPECT_EQ(r.code, 2);
  for (const char* field :
       {"train_iters", "num_attention_heads 5", "zero_optimization.stage", "resources.nodes"}) {
    EXPECT_NE(r.err.find(field), std::string::npos) << field << " not in: " << r.err;
  }
  CliResult unknown = c.Tern({"submit", spec, "--set", "model.bogus_field=1"});
  EXPECT_EQ(unknown.code, 2);
  EXPECT_NE(unknown.err.find("bogus_field"), std::string::npos) << unknown.err;
  std::ofstream(c.dir() + "/broken.json") << "{\"name\": \n";
  CliResult broken = c.Tern({"submit", c.dir() + "/broken.json"});
  EXPECT_EQ(broken.code, 2);
  EXPECT_NE(broken.err.find("broken.json"), std::string::npos) << broken.err;
  EXPECT_EQ(std::count(broken.err.begin(), broken.err.end(), '\n'), 1) << "one-line error";
  CliResult none = c.Tern({"jobs", "--json"});
  EXPECT_EQ(nlohmann::json::parse(none.out)["jobs"].size(), 0u) << "nothing was submitted";
}

TEST_F(ClusterTest, TokensAreRequiredWhenConfigured) {
  ClusterOptions o;
  o.admin_token = "admin-secret";
  o.worker_token = "worker-secret";
  Cluster c(o);
  ASSERT_TRUE(c.StartTernd());
  // A worker with a wrong token is refused and exits 1 naming the problem.
  Process* bad = c.AddWorker("intruder", 1, {}, "nope");
  EXPECT_EQ(bad->Wait(seconds(10)), 1);
  EXPECT_NE(c.ReadFile(c.dir() + "/intruder.log").find("invalid bearer token"), std::string::npos);
  c.AddWorker("w1", 1, {"FAKE_RANK_STEP_MS=20"}, "worker-secret");
  ASSERT_TRUE(c.WaitForWorkers(1, seconds(10)));
  const std::string spec = c.WriteSpec("authed", 3, 1, 1);

  CliResult missing = c.Tern({"submit", spec});
  EXPECT_EQ(missing.code, 2);
  EXPECT_NE(missing.err.find("missing bearer token"), std::string::npos) << missing.err;
  CliResult wrong = c.Tern({"submit", spec}, "guess");
  EXPECT_EQ(wrong.code, 2);
  EXPECT_NE(wrong.err.find("invalid bearer token"), std::string::npos) << wrong.err;
  CliResult as_worker = c.Tern({"submit", spec}, "worker-secret");
  EXPECT_EQ(as_worker.code, 2);
  EXPECT_NE(as_worker.err.find("needs the admin token"), std::string::npos) << as_worker.err;
  CliResult read_no_token = c.Tern({"jobs"});
  EXPECT_EQ(read_no_token.code, 2);

  CliResult ok = c.Tern({"submit", spec, "--watch"}, "admin-secret");
  EXPECT_EQ(ok.code, 0) << ok.out << ok.err;
  CliResult read = c.Tern({"jobs", "--json"}, "worker-secret");  // reads: any valid token
  ASSERT_EQ(read.code, 0) << read.err;
  EXPECT_EQ(nlohmann::json::parse(read.out)["jobs"][0]["state"], "SUCCEEDED");
}

TEST_F(ClusterTest, TerndSigkillRestartKeepsJobsAndWorkersReconnect) {
  Cluster c;
  StartTwoWorkers(c, {"FAKE_RANK_STEP_MS=150"});
  CliResult done = c.Tern({"submit", c.WriteSpec("before", 3, 1, 1), "--watch"});
  ASSERT_EQ(done.code, 0) << done.err;
  CliResult sub = c.Tern({"submit", c.WriteSpec("across-restart", 20, 2, 2)});
  ASSERT_EQ(sub.code, 0);
  const std::string id = Trim(sub.out);
  // Let it get a few steps in, then SIGKILL ternd mid-job and restart it.
  std::this_thread::sleep_for(milliseconds(1200));
  c.KillTernd(SIGKILL);
  std::this_thread::sleep_for(milliseconds(700));  // the ranks keep running meanwhile
  ASSERT_TRUE(c.StartTernd());
  CliResult w = c.Tern({"watch", id, "--json"}, "", seconds(30));
  ASSERT_EQ(w.code, 0) << w.out << w.err;
  auto lines = JsonLines(w.out);
  std::set<int64_t> steps;
  bool restored = false;
  for (const auto& j : lines) {
    if (j.value("kind", "") == "step") steps.insert(j["step"].get<int64_t>());
    if (j.value("kind", "") == "restored") restored = true;
  }
  EXPECT_TRUE(restored);
  EXPECT_TRUE(steps.count(1) && steps.count(20)) << "history from before and after the restart";
  EXPECT_GE(steps.size(), 15u) << "at most a few points in flight at the crash may be lost";
  EXPECT_EQ(lines.back()["state"], "SUCCEEDED");
  auto jobs = nlohmann::json::parse(c.Tern({"jobs", "--json"}).out)["jobs"];
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[1]["state"], "SUCCEEDED");  // the job finished before the crash
  EXPECT_EQ(jobs[0]["round"], 1) << "continued, not restarted";
}

TEST_F(ClusterTest, LostWorkerFailsItsJobNamingTheNode) {
  ClusterOptions o;
  o.heartbeat_timeout = "1s";
  Cluster c(o);
  ASSERT_TRUE(c.StartTernd());
  c.AddWorker("w1", 1);
  Process* w2 = c.AddWorker("w2", 1);
  ASSERT_TRUE(c.WaitForWorkers(2, seconds(10)));
  CliResult sub = c.Tern({"submit", c.WriteSpec("sleep", 100, 2, 1)});
  const std::string id = Trim(sub.out);
  std::this_thread::sleep_for(milliseconds(500));
  w2->Signal(SIGKILL);
  const auto t0 = std::chrono::steady_clock::now();
  CliResult w = c.Tern({"watch", id}, "", seconds(15));
  EXPECT_EQ(w.code, 1) << w.out << w.err;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, seconds(4));
  EXPECT_NE(w.out.find("worker w2 lost"), std::string::npos) << w.out;
}

// The real `tern rank` (engine) launched by tern-worker, rendezvousing through ternd; the spec
// names no checkpoint.dir, so the ranks checkpoint under ternd's --checkpoint-root/<job-id>.
TEST_F(ClusterTest, RealRanksTrainAcrossTwoWorkers) {
  Cluster c(ClusterOptions{.checkpoint_root = true});
  ASSERT_TRUE(c.StartTernd());
  CliResult prep = c.PrepareCorpus(0.1);
  ASSERT_EQ(prep.code, 0) << prep.out << prep.err;
  // Workers whose rank binary is the real `tern`.
  for (const char* name : {"r1", "r2"}) {
    c.AddWorker(name, 1, {}, "", "1s", "tern");
  }
  ASSERT_TRUE(c.WaitForWorkers(2, seconds(10)));
  nlohmann::json spec = {
      {"name", "real"},
      {"model",
       {{"model_type", "gpt2"},
        {"vocab_size", 256},
        {"n_embd", 32},
        {"n_layer", 1},
        {"n_head", 2},
        {"n_positions", 32}}},
      {"data", {{"path", c.dir() + "/corpus"}, {"seq_len", 32}}},
      {"train_micro_batch_size_per_gpu", 2},
      {"steps_per_print", 1},
      {"train_iters", 4},
      {"eval_iters", 1},
      {"checkpoint", {{"interval", 2}}},
      {"resources", {{"nodes", 2}, {"ranks_per_node", 1}, {"threads_per_rank", 1}}}};
  std::ofstream(c.dir() + "/real.json") << spec.dump();
  CliResult r = c.Tern({"submit", c.dir() + "/real.json", "--watch", "--json"}, "", seconds(60));
  ASSERT_EQ(r.code, 0) << r.out << r.err << c.ReadFile(c.dir() + "/r1.log");
  int steps = 0;
  for (const auto& j : JsonLines(r.out)) {
    if (j.value("kind", "") == "step") {
      ++steps;
      EXPECT_GT(j["loss"].get<double>(), 0.0);
      EXPECT_LT(j["loss"].get<double>(), 10.0);
    }
  }
  EXPECT_EQ(steps, 4);
  const std::string id = JsonLines(r.out).at(0)["id"];
  CliResult show = c.Tern({"show", id, "--json"});
  const std::string dir = c.checkpoint_root() + "/" + id;
  const auto shown = nlohmann::json::parse(show.out, nullptr, false);
  ASSERT_TRUE(shown.is_object()) << show.out;
  EXPECT_EQ(shown["spec"]["checkpoint"].value("dir", ""), dir) << show.out;
  for (const char* step : {"step-000002", "step-000004"})
    EXPECT_TRUE(std::filesystem::exists(dir + "/" + step + "/manifest.json")) << dir << step;
}

// Workers report their CPU sets; two workers on one host with the same CPUs get a warning
// in `tern workers` and a cpu_overlap event on the job placed on them; ranks run bound.
TEST_F(ClusterTest, OverlappingWorkersOnOneHostAreWarnedAndRanksRunBound) {
  auto mine = cpu::ThisProcessAffinity();
  ASSERT_TRUE(mine.ok()) << mine.status();
  const std::string first = std::to_string(mine->front());
  Cluster c;
  ASSERT_TRUE(c.StartTernd());
  for (const char* name : {"a", "b"}) {
    c.AddWorker(name, 1, {"FAKE_RANK_STEP_MS=20"}, "", "1s", "", {"--cpus", first});
  }
  ASSERT_TRUE(c.WaitForWorkers(2, seconds(10)));
  CliResult text = c.Tern({"workers"});
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_NE(text.out.find("  cpus per slot: " + first + "\n"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("  warning: CPUs " + first + " overlap worker b on host "),
            std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find("  warning: CPUs " + first + " overlap worker a on host "),
            std::string::npos)
      << text.out;

  CliResult r = c.Tern({"submit", c.WriteSpec("bound", 3, 2, 1), "--watch", "--json"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  std::set<std::string> overlap_workers;
  int placements = 0;
  for (const auto& j : JsonLines(r.out)) {
    if (j.value("type", "") != "event") continue;
    if (j["kind"] == "cpu_overlap") overlap_workers.insert(j.value("worker", ""));
    if (j["kind"] == "placement") {
      ++placements;
      auto p = nlohmann::json::parse(j["message"].get<std::string>());
      EXPECT_EQ(p["cpus"], first) << p;  // the rank's own Cpus_allowed_list
      EXPECT_EQ(p["bound"], first) << p;
      EXPECT_EQ(p["threads"], 1) << p;
      EXPECT_EQ(p["omp"], "1") << p;
      EXPECT_EQ(p["blas"], "1") << p;
    }
  }
  EXPECT_EQ(overlap_workers, (std::set<std::string>{"a", "b"})) << r.out;
  EXPECT_EQ(placements, 2) << r.out;

  // A worker that does not bind reports no sets and is neither warned nor warned about.
  c.AddWorker("c", 1, {}, "", "1s", "", {"--no-bind-cores"});
  ASSERT_TRUE(c.WaitForWorkers(3, seconds(10)));
  CliResult js = c.Tern({"workers", "--json"});
  ASSERT_EQ(js.code, 0) << js.err;
  auto workers = nlohmann::json::parse(js.out)["workers"];
  ASSERT_EQ(workers.size(), 3u) << js.out;
  for (const auto& w : workers) {
    if (w["name"] == "c") {
      EXPECT_FALSE(w.contains("cpu_sets")) << w;
      EXPECT_FALSE(w.contains("warnings")) << w;
    } else {
      EXPECT_EQ(w["cpu_sets"], nlohmann::json::array({first})) << w;
      ASSERT_EQ(w["warnings"].size(), 1u) << w;
    }
  }
}

}  // namespace
}  // namespace tern::testing
