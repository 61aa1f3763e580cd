// RankSupervisor with the fake rank: relays, logs, exit codes, cancellation with grace.
#include "worker/agent/rank_supervisor.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

namespace tern::agent {
namespace {

using std::chrono::milliseconds;

class RankSupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tern-sup-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    const char* src = std::getenv("TERN_SOURCE_DIR");
    fake_ = std::string(src ? src : ".") + "/tests/worker/agent/fake_rank.sh";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  RankLaunch Launch(const std::string& name, int rank, int world, int iters) {
    const std::string spec = dir_ + "/" + name + ".json";
    std::ofstream(spec) << "{\"name\": \"" << name << "\", \"train_iters\": \"" << iters << "\"}\n";
    RankLaunch l;
    l.id = RankId{name, 1, rank};
    l.argv = {fake_,
              "rank",
              "--spec-file",
              spec,
              "--rank",
              std::to_string(rank),
              "--world-size",
              std::to_string(world),
              "--ranks-per-node",
              "1",
              "--rendezvous",
              "127.0.0.1:1",
              "--rendezvous-prefix",
              name + "/1",
              "--threads",
              "1",
              "--json"};
    l.env = {"FAKE_RANK_STEP_MS=10"};
    l.log_path = dir_ + "/" + name + "/rank-" + std::to_string(rank) + ".log";
    l.relay_metrics = rank == 0;
    return l;
  }

  // Collects until every rank reported its exit (or the timeout).
  std::vector<tern::v1::WorkerMessage> Drain(RankSupervisor& s, int exits, milliseconds timeout) {
    std::vector<tern::v1::WorkerMessage> out;
    const auto end = std::chrono::steady_clock::now() + timeout;
    int seen = 0;
    while (seen < exits && std::chrono::steady_clock::now() < end) {
      for (auto& m : s.CollectUploads(1 << 20)) {
        seen += m.has_exited() ? 1 : 0;
        out.push_back(std::move(m));
      }
      std::this_thread::sleep_for(milliseconds(10));
    }
    return out;
  }

  std::string dir_, fake_;
  std::mutex mu_;
  std::vector<tern::v1::WorkerMessage> relayed_;
};

TEST_F(RankSupervisorTest, RelaysRankZeroMetricsLogsAndExitCodes) {
  RankSupervisor s(
      milliseconds(500),
      [this](tern::v1::WorkerMessage m) {
        std::lock_guard<std::mutex> lock(mu_);
        relayed_.push_back(std::move(m));
      },
      [] {});
  s.Launch(Launch("ok", 0, 2, 4));
  s.Launch(Launch("ok", 1, 2, 4));
  s.Launch(Launch("ok", 1, 2, 4));  // duplicate: ignored
  auto up = Drain(s, 2, milliseconds(10000));
  std::string log;
  int exits = 0;
  for (const auto& m : up) {
    if (m.has_log() && m.log().rank() == 1) log += m.log().data();
    if (m.has_exited()) {
      ++exits;
      EXPECT_EQ(m.exited().exit_code(), 0);
    }
  }
  EXPECT_EQ(exits, 2);
  EXPECT_NE(log.find("fake rank 1 of 2"), std::string::npos) << log;
  EXPECT_NE(log.find("fake rank 1 done"), std::string::npos) << log;
  // JSON protocol lines are logged as `tern train` prints them (steps_per_print 10: the first
  // and the last step), never as raw JSON.
  EXPECT_EQ(log.find("\"type\""), std::string::npos) << log;
  EXPECT_NE(log.find("step      1/4      | loss "), std::string::npos) << log;
  EXPECT_NE(log.find("step      4/4      | loss "), std::string::npos) << log;
  EXPECT_EQ(log.find("step      2/4"), std::string::npos) << log;
  EXPECT_NE(log.find("[rank_ready] rank 1 ready\n"), std::string::npos) << log;
  EXPECT_NE(log.find("eval at step 4: val_loss 2.5000\n"), std::string::npos) << log;
  std::lock_guard<std::mutex> lock(mu_);
  int started = 0, steps = 0, events = 0;
  for (const auto& m : relayed_) {
    started += m.has_started();
    events += m.has_event();
    if (m.has_metric()) {
      EXPECT_EQ(m.metric().rank(), 0);
      steps += m.metric().kind() == "step";
    }
  }
  EXPECT_EQ(started, 2);
  EXPECT_EQ(steps, 4);
  EXPECT_EQ(events, 4) << "events (rank_ready, placement) are relayed from every rank";
  EXPECT_EQ(s.Snapshot().size(), 2u);
  EXPECT_EQ(s.running(), 0);
}

TEST_F(RankSupervisorTest, CrashExitCodeAndMissingBinaryAreReported) {
  RankSupervisor s(
      milliseconds(500), [](tern::v1::WorkerMessage) {}, [] {});
  s.Launch(Launch("fail", 1, 2, 10));  // the last rank exits 3 after step 2
  RankLaunch missing = Launch("missing", 0, 1, 1);
  missing.argv[0] = dir_ + "/no-such-binary";
  s.Launch(missing);
  std::map<std::string, int> codes;
  for (const auto& m : Drain(s, 2, milliseconds(10000))) {
    if (m.has_exited()) codes[m.exited().job_id()] = m.exited().exit_code();
  }
  EXPECT_EQ(codes["fail"], 3);
  EXPECT_EQ(codes["missing"], 127);
}

TEST_F(RankSupervisorTest, CancelUsesSigtermThenSigkillAfterTheGrace) {
  RankSupervisor s(
      milliseconds(300), [](tern::v1::WorkerMessage) {}, [] {});
  s.Launch(Launch("sleep", 0, 1, 1));
  s.Launch(Launch("ignore-term", 0, 1, 1));
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(s.running(), 2);
  const auto t0 = std::chrono::steady_clock::now();
  s.Cancel("sleep");
  s.Cancel("ignore-term");
  std::map<std::string, int> codes;
  for (const auto& m : Drain(s, 2, milliseconds(5000))) {
    if (m.has_exited()) codes[m.exited().job_id()] = m.exited().exit_code();
  }
  // Well under the 5 s the ranks would need without the escalation (a loose bound: loaded CI).
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(4000));
  EXPECT_EQ(codes["sleep"], 143);                  // exited on SIGTERM
  EXPECT_EQ(codes["ignore-term"], 128 + SIGKILL);  // needed the SIGKILL
}

// Orders reach the ranks of their round through stdin (the control channel); a cancel or an
// order for another round leaves them alone.
TEST_F(RankSupervisorTest, OrdersReachTheRanksOfTheirRoundOnStdin) {
  RankSupervisor s(
      milliseconds(300), [](tern::v1::WorkerMessage) {}, [] {});
  for (int r = 0; r < 2; ++r) {
    RankLaunch l = Launch("sleep-obey", r, 2, 1);
    l.argv.push_back("--control-stdin");
    s.Launch(std::move(l));
  }
  std::this_thread::sleep_for(milliseconds(300));
  ASSERT_EQ(s.running(), 2);
  EXPECT_EQ(s.Order("sleep-obey", 2, R"({"op":"stop","round":2})"), 0);  // no rank of round 2
  EXPECT_EQ(s.Order("other-job", 1, R"({"op":"stop","round":1})"), 0);
  s.Cancel("sleep-obey", 2);  // another round: nothing is signalled
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(s.running(), 2);
  EXPECT_EQ(s.Order("sleep-obey", 1, R"({"op":"stop","reason":"grow","round":1})"), 2);
  std::map<int, int> codes;
  for (const auto& m : Drain(s, 2, milliseconds(5000)))
    if (m.has_exited()) codes[m.exited().rank()] = m.exited().exit_code();
  EXPECT_EQ(codes[0], 75);  // obeyed: "checkpointed" and exited 75
  EXPECT_EQ(codes[1], 75);
  EXPECT_EQ(s.Order("sleep-obey", 1, R"({"op":"stop","round":1})"), 0);  // gone: no one to tell
}

// A rank launched with a CPU set runs bound to it (read back from /proc/<pid>/status while it
// runs, and from its own report) with the thread variables set, overriding inherited ones.
TEST_F(RankSupervisorTest, BindsTheRankToItsCpuSetAndSetsItsThreadCounts) {
  auto mine = cpu::ThisProcessAffinity();
  ASSERT_TRUE(mine.ok()) << mine.status();
  std::mutex mu;
  std::vector<tern::v1::WorkerMessage> relayed;
  RankSupervisor s(
      milliseconds(500),
      [&](tern::v1::WorkerMessage m) {
        std::lock_guard<std::mutex> lock(mu);
        relayed.push_back(std::move(m));
      },
      [] {});
  RankLaunch l = Launch("sleep", 0, 1, 1);
  l.slot = 0;
  l.cpus = {mine->back()};
  l.argv.push_back("--cpus");
  l.argv.push_back(cpu::FormatCpuList(l.cpus));
  l.env = {"OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1"};
  ::setenv("OMP_NUM_THREADS", "99", 1);  // inherited; the launch's value must win
  s.Launch(l);
  EXPECT_TRUE(s.Known(l.id));
  EXPECT_EQ(s.SlotsInUse(), std::set<int>{0});
  pid_t pid = -1;
  nlohmann::json report;
  for (int i = 0; i < 200 && report.is_null(); ++i) {
    std::this_thread::sleep_for(milliseconds(25));
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& m : relayed) {
      if (m.has_started()) pid = m.started().pid();
      if (m.has_event() && m.event().kind() == "placement")
        report = nlohmann::json::parse(m.event().message());
    }
  }
  ::unsetenv("OMP_NUM_THREADS");
  ASSERT_GT(pid, 0);
  ASSERT_FALSE(report.is_null()) << "no placement report";
  auto proc = cpu::ProcessAffinityFromProc(pid);  // the rank still runs (a "sleep" job)
  ASSERT_TRUE(proc.ok()) << proc.status();
  EXPECT_EQ(*proc, l.cpus);
  EXPECT_EQ(report["cpus"], cpu::FormatCpuList(l.cpus));
  EXPECT_EQ(report["bound"], cpu::FormatCpuList(l.cpus));
  EXPECT_EQ(report["omp"], "1");
  EXPECT_EQ(report["blas"], "1");
  s.Cancel("sleep");
  Drain(s, 1, milliseconds(5000));
  EXPECT_TRUE(s.SlotsInUse().empty()) << "an exited rank frees its slot";
}

}  // namespace
}  // namespace tern::agent
