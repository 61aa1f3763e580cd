// Two "hosts" as two network namespaces joined by a veth pair: ternd and one tern-worker in the
// first, a second tern-worker in the second, each advertising its own veth address. A 2-node
// job of real ranks must train to success with its collectives crossing the veth, and the bytes
// the veth counted must agree with Tern's cross-node byte accounting within 10%; an elastic
// 2-node job that loses host B finishes on host A.
//
// Needs root and `ip` (iproute2); skips with one line where namespaces cannot be created. The
// namespaces (and with them the veth pair) are always removed, the processes always killed.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/daemon/cluster_harness.h"

namespace tern::testing {
namespace {

using std::chrono::seconds;

const char* kIp = "/usr/sbin/ip";

std::string Shell(const std::string& cmd, int* code = nullptr) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int st = pclose(p);
  if (code) *code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

// Two namespaces and the veth pair between them; removed in the destructor.
class HostPair {
 public:
  HostPair() {
    const int id = getpid() % 100000;
    a_ = "tern-a-" + std::to_string(id);
    b_ = "tern-b-" + std::to_string(id);
    va_ = "tva" + std::to_string(id);
    vb_ = "tvb" + std::to_string(id);
    // A private /24 per test process; nothing else is addressed.
    const std::string net = "10.213." + std::to_string(id % 250) + ".";
    addr_a_ = net + "1";
    addr_b_ = net + "2";
  }
  ~HostPair() {
    Shell(std::string(kIp) + " netns del " + a_);
    Shell(std::string(kIp) + " netns del " + b_);
  }
  // "" when both hosts are up; else why not.
  std::string Create() {
    const std::string ip = kIp;
    for (const std::string& cmd :
         {ip + " netns add " + a_, ip + " netns add " + b_,
          ip + " link add " + va_ + " type veth peer name " + vb_,
          ip + " link set " + va_ + " netns " + a_, ip + " link set " + vb_ + " netns " + b_,
          ip + " -n " + a_ + " addr add " + addr_a_ + "/24 dev " + va_,
          ip + " -n " + b_ + " addr add " + addr_b_ + "/24 dev " + vb_,
          ip + " -n " + a_ + " link set " + va_ + " up",
          ip + " -n " + b_ + " link set " + vb_ + " up", ip + " -n " + a_ + " link set lo up",
          ip + " -n " + b_ + " link set lo up"}) {
      int code = 0;
      const std::string out = Shell(cmd, &code);
      if (code != 0) return cmd + ": " + out;
    }
    return "";
  }
  // Bytes sent by both ends of the veth pair so far.
  uint64_t VethTxBytes() const { return TxBytes(a_, va_) + TxBytes(b_, vb_); }
  const std::string& a() const { return a_; }
  const std::string& b() const { return b_; }
  const std::string& addr_a() const { return addr_a_; }
  const std::string& addr_b() const { return addr_b_; }

 private:
  static uint64_t TxBytes(const std::string& ns, const std::string& dev) {
    auto j = nlohmann::json::parse(
        Shell(std::string(kIp) + " -n " + ns + " -j -s link show dev " + dev), nullptr, false);
    if (!j.is_array() || j.empty()) return 0;
    return j[0]["stats64"]["tx"]["bytes"].get<uint64_t>();
  }
  std::string a_, b_, va_, vb_, addr_a_, addr_b_;
};

std::string Env(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v ? v : fallback;
}

class CrossHostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0 || !std::filesystem::exists(kIp)) {
      GTEST_SKIP() << "needs root and " << kIp << " to create network namespaces";
    }
    if (const std::string why = hosts_.Create(); !why.empty()) {
      GTEST_SKIP() << "cannot create network namespaces: " << why;
    }
    dir_ = (std::filesystem::temp_directory_path() / ("tern-crosshost-" + std::to_string(getpid())))
               .string();
    std::filesystem::create_directories(dir_);
    // ternd on host A's veth address.
    ternd_ = std::make_unique<Process>(
        InNs(hosts_.a(),
             {bin_ + "/ternd", "--listen", hosts_.addr_a() + ":0", "--state-dir", dir_ + "/state",
              "--port-file", dir_ + "/port", "--http", "127.0.0.1:0", "--heartbeat-timeout", "2s"}),
        std::vector<std::string>{}, dir_ + "/ternd.log");
    std::string port;
    for (int i = 0; i < 100 && port.empty(); ++i) {
      std::ifstream(dir_ + "/port") >> port;
      if (port.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_FALSE(port.empty()) << Shell("cat " + dir_ + "/ternd.log");
    const std::string coordinator = hosts_.addr_a() + ":" + port;
    // One worker per host; each advertises the address of its route to ternd (its veth end).
    for (const auto& [ns, name] : {std::pair{hosts_.a(), "wa"}, std::pair{hosts_.b(), "wb"}}) {
      workers_.push_back(std::make_unique<Process>(
          InNs(ns,
               {bin_ + "/tern-worker", "--coordinator", coordinator, "--name", name, "--slots", "1",
                "--scratch", dir_ + "/" + name, "--rank-binary", bin_ + "/tern", "--grace", "1s"}),
          std::vector<std::string>{}, dir_ + "/" + name + ".log"));
    }
    tern_ = std::string(kIp) + " netns exec " + hosts_.a() +
            " env TERN_COORDINATOR=" + coordinator + " " + bin_ + "/tern ";
    bool up = false;
    for (int i = 0; i < 100 && !up; ++i) {
      auto j = nlohmann::json::parse(Shell(tern_ + "workers --json"), nullptr, false);
      int connected = 0;
      if (j.is_object() && j.contains("workers"))
        for (const auto& w : j["workers"]) connected += w.value("connected", false) ? 1 : 0;
      up = connected == 2;
      if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_TRUE(up) << WorkerLogs();
    int code = 0;
    const std::string out =
        Shell(bin_ + "/tern data prepare --tokenizer byte --input " + WriteCorpusText(dir_) +
                  " --output " + dir_ + "/corpus --doc-separator %",
              &code);
    ASSERT_EQ(code, 0) << out;
  }
  void TearDown() override {
    workers_.clear();  // (Process stops what it started)
    ternd_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  std::vector<std::string> InNs(const std::string& ns, std::vector<std::string> argv) {
    argv.insert(argv.begin(), {kIp, "netns", "exec", ns});
    return argv;
  }
  std::string WorkerLogs() { return Shell("cat " + dir_ + "/wa.log " + dir_ + "/wb.log"); }
  nlohmann::json Spec(const std::string& name, int steps) {
    return {{"name", name},
            {"model",
             {{"model_type", "llama"},
              {"hidden_size", 128},
              {"num_hidden_layers", 2},
              {"num_attention_heads", 4},
              {"max_position_embeddings", 32}}},
            {"data", {{"path", dir_ + "/corpus"}, {"seq_len", 32}}},
            {"train_micro_batch_size_per_gpu", 2},
            {"steps_per_print", 1},
            {"train_iters", steps},
            {"eval_interval", 0},
            {"resources", {{"nodes", 2}, {"ranks_per_node", 1}, {"threads_per_rank", 1}}}};
  }

  HostPair hosts_;
  std::string bin_ = Env("TERN_BIN_DIR", "build/bin");
  std::string dir_, tern_;
  std::unique_ptr<Process> ternd_;
  std::vector<std::unique_ptr<Process>> workers_;
};

TEST_F(CrossHostTest, TwoNodeJobAcrossNamespacesCountsItsCrossNodeBytes) {
  int code = 0;
  std::string out;
  const int steps = 12;
  std::ofstream(dir_ + "/spec.json") << Spec("cross-host", steps).dump();
  const uint64_t before = hosts_.VethTxBytes();
  out = Shell("timeout 180 " + tern_ + "submit " + dir_ + "/spec.json --watch --json", &code);
  const uint64_t veth = hosts_.VethTxBytes() - before;
  ASSERT_EQ(code, 0) << out << WorkerLogs();

  // Each step reports the bytes all ranks sent to the other node.
  uint64_t job_inter = 0;
  int seen = 0;
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object() || j.value("kind", "") != "step") continue;
    ++seen;
    job_inter += j["bytes_inter_node"].get<uint64_t>();
  }
  EXPECT_EQ(seen, steps) << out;
  const double tern_bytes = double(job_inter);
  ASSERT_GT(tern_bytes, 0) << out;
  const double ratio = double(veth) / tern_bytes;
  // The veth also carries TCP/IP headers and worker B's gRPC (rendezvous, metrics, logs).
  EXPECT_NEAR(ratio, 1.0, 0.10) << "veth " << veth << " bytes, Tern " << tern_bytes;
  std::printf("{\"veth_bytes\": %llu, \"tern_cross_node_bytes\": %.0f, \"ratio\": %.4f}\n",
              static_cast<unsigned long long>(veth), tern_bytes, ratio);
  // Host B's rank really bound its advertised address.
  EXPECT_NE(Shell("cat " + dir_ + "/wb.log").find(hosts_.addr_b()), std::string::npos)
      << Shell("cat " + dir_ + "/wb.log");
}

// An elastic 2-host job loses host B (its tern-worker SIGKILLed, its rank with it): the job
// goes on on host A at the smaller world from its newest checkpoint and succeeds.
TEST_F(CrossHostTest, ElasticJobLosesAHostAndFinishesOnTheOther) {
  nlohmann::json spec = Spec("cross-host-elastic", 40);
  spec["train_batch_size"] = 4;
  spec["checkpoint"] = {{"interval", 1}, {"keep_last", 3}};
  spec["elastic"] = {{"enabled", true}, {"min_nodes", 1}, {"max_nodes", 2}};
  std::ofstream(dir_ + "/elastic.json") << spec.dump();
  int code = 0;
  const std::string submitted = Shell(tern_ + "submit " + dir_ + "/elastic.json --json", &code);
  ASSERT_EQ(code, 0) << submitted;
  const std::string id = nlohmann::json::parse(submitted, nullptr, false).value("id", "");
  ASSERT_FALSE(id.empty()) << submitted;
  auto show = [&] {
    return nlohmann::json::parse(Shell(tern_ + "show " + id + " --json"), nullptr, false);
  };
  auto step_of = [](const nlohmann::json& j) -> int64_t {
    if (!j.is_object() || !j.contains("last_metric")) return 0;
    const auto& v = j["last_metric"]["step"];
    return v.is_string() ? std::stoll(v.get<std::string>()) : v.is_number() ? v.get<int64_t>() : 0;
  };
  for (int i = 0; i < 600 && step_of(show()) < 5; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_GE(step_of(show()), 5) << show() << WorkerLogs();
  workers_[1]->Signal(SIGKILL);  // host B is gone
  std::string state;
  for (int i = 0; i < 1200; ++i) {
    state = show().value("state", "");
    if (state == "SUCCEEDED" || state == "FAILED" || state == "CANCELLED") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto job = show();
  ASSERT_EQ(state, "SUCCEEDED") << job << WorkerLogs();
  EXPECT_EQ(job.value("round", 0), 2) << job;
  EXPECT_EQ(job.value("world_size", 0), 1) << job;
  EXPECT_EQ(step_of(job), 40) << job;
  ASSERT_TRUE(job.contains("incidents") && job["incidents"].size() == 1u) << job;
  const auto& lost = job["incidents"][0]["steps_lost"];
  EXPECT_LE(lost.is_string() ? std::stoll(lost.get<std::string>()) : lost.get<int64_t>(), 1) << job;
}

}  // namespace
}  // namespace tern::testing
