// Hostile clients against real ternd / tern-worker processes (fake ranks): names that would
// forge listings, oversized specs, a flood of large specs, a second ternd on the same state
// dir, a second worker with a live worker's name, stale workers, and a job that can never
// fit. Each test asserts the exit code or status, that the message names the culprit, and
// that what was stored before is still there. The Cluster kills what it started.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "tern/v1/cluster.grpc.pb.h"
#include "tests/daemon/cluster_harness.h"

namespace tern::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// A raw gRPC client: it sends what the `tern` CLI would refuse to send.
struct Raw {
  explicit Raw(const Cluster& c) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    channel = grpc::CreateCustomChannel(c.address(), grpc::InsecureChannelCredentials(), args);
    jobs = tern::v1::JobService::NewStub(channel);
    workers = tern::v1::WorkerService::NewStub(channel);
  }
  grpc::Status Submit(const tern::v1::JobSpec& spec, std::string* id = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(10));
    tern::v1::SubmitJobRequest req;
    *req.mutable_spec() = spec;
    tern::v1::SubmitJobResponse resp;
    grpc::Status st = jobs->SubmitJob(&ctx, req, &resp);
    if (id) *id = resp.job_id();
    return st;
  }
  grpc::Status Register(const std::string& name, const std::string& host) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(10));
    tern::v1::RegisterRequest req;
    req.set_name(name);
    req.set_host(host);
    req.set_slots(1);
    tern::v1::RegisterResponse resp;
    return workers->Register(&ctx, req, &resp);
  }
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<tern::v1::JobService::Stub> jobs;
  std::unique_ptr<tern::v1::WorkerService::Stub> workers;
};

tern::v1::JobSpec Spec(const std::string& name, int nodes = 1) {
  tern::v1::JobSpec s;
  s.set_name(name);
  s.mutable_model()->set_model_type("gpt2");
  s.mutable_model()->set_n_embd(64);
  s.mutable_model()->set_n_layer(2);
  s.mutable_model()->set_n_head(4);
  s.mutable_data()->set_path("/nonexistent/data");
  s.set_train_iters(3);
  s.mutable_resources()->set_nodes(nodes);
  return s;
}

nlohmann::json Json(const CliResult& r) { return nlohmann::json::parse(r.out, nullptr, false); }

std::vector<std::string> JobIds(Cluster& c) {
  std::vector<std::string> ids;
  auto j = Json(c.Tern({"jobs", "--json", "--limit", "1000"}));
  if (j.is_object())
    for (const auto& job : j["jobs"]) ids.push_back(job["id"]);
  return ids;
}

bool Contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

TEST(HostileClients, NamesThatForgeRowsOrEscapesAreRefusedNamingTheRule) {
  Cluster c;
  ASSERT_TRUE(c.StartTernd());
  Raw raw(c);
  std::string good;
  ASSERT_TRUE(raw.Submit(Spec("good"), &good).ok());
  for (const std::string& bad :
       {std::string("evil\nj-000099  RUNNING"), std::string("\x1b[2J\x1b[Hpwned"),
        std::string("a\xe2\x80\xae"
                    "b"),
        std::string(200, 'n')}) {
    grpc::Status st = raw.Submit(Spec(bad));
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(st.error_message().find("name: "), std::string::npos) << st.error_message();
    EXPECT_NE(st.error_message().find("names are 1..128 bytes of printable UTF-8"),
              std::string::npos)
        << st.error_message();
  }
  // The CLI refuses the same name before sending it (same pipeline), exit 2.
  const std::string path = c.WriteSpec("ok", 3, 1, 1);
  CliResult cli = c.Tern({"submit", path, "--set", "name=\"tab\\there\""});
  EXPECT_EQ(cli.code, 2) << cli.out << cli.err;
  EXPECT_NE(cli.err.find("name: a control character"), std::string::npos) << cli.err;
  EXPECT_EQ(cli.err.find('\t'), std::string::npos) << "the message itself is escaped";
  // Worker names and hosts: the same policy at Register.
  grpc::Status reg = raw.Register("w\n1", "h");
  EXPECT_EQ(reg.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(reg.error_message().find("worker name (tern-worker --name): "), std::string::npos)
      << reg.error_message();
  reg = raw.Register("w1", std::string("host\x1b]0;title\x07", 16));
  EXPECT_EQ(reg.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(reg.error_message().find("worker host: "), std::string::npos) << reg.error_message();
  // Nothing stored before is lost, nothing bad was stored.
  auto ids = JobIds(c);
  EXPECT_EQ(ids, std::vector<std::string>{good});
  CliResult workers = c.Tern({"workers", "--json"});
  EXPECT_EQ(Json(workers)["workers"].size(), 0u) << workers.out;
}

TEST(HostileClients, AWorkerWithABadNameExitsNonZeroNamingTheField) {
  Cluster c;
  ASSERT_TRUE(c.StartTernd());
  Process* w = c.AddWorker(std::string("bad\x1b[31mname"), 1);
  EXPECT_EQ(w->Wait(seconds(10)), 1);
  const std::string log = c.ReadFile(c.dir() + "/bad\x1b[31mname.log");
  EXPECT_NE(log.find("worker name (tern-worker --name): a control character"), std::string::npos)
      << log;
}

TEST(HostileClients, OversizedSpecsAreRefusedAndManyLargeSpecsNeverBreakListings) {
  Cluster c;
  ASSERT_TRUE(c.StartTernd());
  Raw raw(c);
  std::string first;
  ASSERT_TRUE(raw.Submit(Spec("first"), &first).ok());
  tern::v1::JobSpec huge = Spec("huge");
  huge.mutable_data()->set_path(std::string(2 << 20, 'p'));
  grpc::Status st = raw.Submit(huge);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("1048576-byte limit for a submitted spec"), std::string::npos)
      << st.error_message().substr(0, 300);
  // 20 specs just under the cap: 18 MiB of specs, more than one gRPC message may carry.
  tern::v1::JobSpec big = Spec("big");
  big.mutable_data()->set_path("/" + std::string(900 << 10, 'p'));
  std::vector<std::string> ids = {first};
  for (int i = 0; i < 20; ++i) {
    std::string id;
    ASSERT_TRUE(raw.Submit(big, &id).ok()) << i;
    ids.push_back(id);
  }
  CliResult table = c.Tern({"jobs"});
  ASSERT_EQ(table.code, 0) << table.err;
  for (const auto& id : ids) EXPECT_NE(table.out.find(id), std::string::npos) << id;
  auto listed = JobIds(c);
  EXPECT_EQ(listed.size(), ids.size());
  // A listing carries the spec's summary; `tern show --json` the whole spec.
  auto one = Json(c.Tern({"show", ids.back(), "--json"}));
  EXPECT_EQ(one["spec"]["data"]["path"].get<std::string>().size(), (900u << 10) + 1);
  // Paging: a small limit hands out the page token, and the next page continues.
  grpc::ClientContext ctx;
  tern::v1::ListJobsRequest req;
  req.set_limit(5);
  tern::v1::ListJobsResponse page;
  ASSERT_TRUE(raw.jobs->ListJobs(&ctx, req, &page).ok());
  ASSERT_EQ(page.jobs_size(), 5);
  EXPECT_EQ(page.next_before_id(), page.jobs(4).id());
  EXPECT_FALSE(page.jobs(0).spec().has_data()) << "listings do not ship whole specs";
  EXPECT_EQ(page.jobs(0).spec().name(), "big");
  grpc::ClientContext ctx2;
  req.set_before_id(page.next_before_id());
  req.set_limit(100);
  tern::v1::ListJobsResponse rest;
  ASSERT_TRUE(raw.jobs->ListJobs(&ctx2, req, &rest).ok());
  EXPECT_EQ(rest.jobs_size(), static_cast<int>(ids.size()) - 5);
  EXPECT_EQ(rest.next_before_id(), "");
  EXPECT_EQ(rest.jobs(rest.jobs_size() - 1).id(), first);
}

TEST(HostileClients, ASecondTerndOnTheSameStateDirExits2NamingTheHolder) {
  Cluster c;
  ASSERT_TRUE(c.StartTernd());
  Raw raw(c);
  std::string id;
  ASSERT_TRUE(raw.Submit(Spec("kept"), &id).ok());
  Process second({c.bin("ternd"), "--listen", "127.0.0.1:0", "--http", "off", "--state-dir",
                  c.dir() + "/state"},
                 {}, c.dir() + "/second-ternd.log");
  EXPECT_EQ(second.Wait(seconds(10)), 2);
  const std::string log = c.ReadFile(c.dir() + "/second-ternd.log");
  EXPECT_NE(log.find("is in use by another process (pid " + std::to_string(c.ternd()->pid())),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("host "), std::string::npos) << log;
  EXPECT_NE(log.find("ternd.lock"), std::string::npos) << log;
  // The first one still serves, with its jobs.
  EXPECT_TRUE(c.ternd()->Running());
  EXPECT_TRUE(Contains(JobIds(c), id));
  // SIGKILL drops the lock with the process: a restart on the same dir works.
  c.KillTernd(SIGKILL);
  ASSERT_TRUE(c.StartTernd());
  EXPECT_TRUE(Contains(JobIds(c), id));
}

TEST(HostileClients, ALiveWorkersNameIsRefusedAndFreedWhenItsSessionEnds) {
  Cluster c;
  ASSERT_TRUE(c.StartTernd());
  Process* first = c.AddWorker("a", 1, {"FAKE_RANK_STEP_MS=40"});
  ASSERT_TRUE(c.WaitForWorkers(1, seconds(10)));
  // int64 fields are strings in the proto JSON mapping.
  const std::string registered = Json(c.Tern({"workers", "--json"}))["workers"][0]["registered_ms"];
  std::vector<std::string> argv = {c.bin("tern-worker"),
                                   "--coordinator",
                                   c.address(),
                                   "--name",
                                   "a",
                                   "--slots",
                                   "1",
                                   "--scratch",
                                   c.dir() + "/a2",
                                   "--rank-binary",
                                   c.fake_rank(),
                                   "--max-backoff",
                                   "500ms"};
  {
    Process impostor(argv, {}, c.dir() + "/impostor.log");
    EXPECT_EQ(impostor.Wait(seconds(10)), 1);
  }
  const std::string log = c.ReadFile(c.dir() + "/impostor.log");
  EXPECT_NE(log.find("worker name \"a\" is held by a live session"), std::string::npos) << log;
  // The first keeps its session and can still run a job.
  auto w = Json(c.Tern({"workers", "--json"}))["workers"];
  ASSERT_EQ(w.size(), 1u);
  EXPECT_TRUE(w[0]["connected"].get<bool>());
  EXPECT_EQ(w[0]["registered_ms"], registered) << "the impostor took no session";
  CliResult sub = c.Tern({"submit", c.WriteSpec("ok", 3, 1, 1), "--watch"});
  EXPECT_EQ(sub.code, 0) << sub.out << sub.err;
  // Once the first is gone (its stream breaks), a new process may take the name back.
  first->Signal(SIGKILL);
  first->Wait(seconds(5));
  Process restarted(argv, {}, c.dir() + "/restarted.log");
  const auto end = std::chrono::steady_clock::now() + seconds(10);
  bool back = false;
  while (!back && std::chrono::steady_clock::now() < end && restarted.Running()) {
    auto ws = Json(c.Tern({"workers", "--json"}))["workers"];
    back = ws.size() == 1 && ws[0]["connected"].get<bool>() && ws[0]["registered_ms"] != registered;
    if (!back) std::this_thread::sleep_for(milliseconds(100));
  }
  EXPECT_TRUE(back) << c.ReadFile(c.dir() + "/restarted.log");
}

TEST(HostileClients, DisconnectedWorkersExpireFromListings) {
  ClusterOptions o;
  o.heartbeat_timeout = "1s";
  o.ternd_args = {"--worker-expiry", "1s"};
  Cluster c(o);
  ASSERT_TRUE(c.StartTernd());
  Process* gone = c.AddWorker("gone", 1);
  c.AddWorker("stays", 1);
  ASSERT_TRUE(c.WaitForWorkers(2, seconds(10)));
  gone->Signal(SIGKILL);
  const auto end = std::chrono::steady_clock::now() + seconds(10);
  nlohmann::json ws;
  while (std::chrono::steady_clock::now() < end) {
    ws = Json(c.Tern({"workers", "--json"}))["workers"];
    if (ws.size() == 1) break;
    std::this_thread::sleep_for(milliseconds(100));
  }
  ASSERT_EQ(ws.size(), 1u) << ws.dump();
  EXPECT_EQ(ws[0]["name"], "stays");
  // Not back after a restart either (its row stays in the state db as history).
  c.KillTernd(SIGTERM);
  ASSERT_TRUE(c.StartTernd());
  ASSERT_TRUE(c.WaitForWorkers(1, seconds(10)));
  ws = Json(c.Tern({"workers", "--json"}))["workers"];
  ASSERT_EQ(ws.size(), 1u) << ws.dump();
  EXPECT_EQ(ws[0]["name"], "stays");
}

TEST(HostileClients, AJobThatCanNeverFitNeitherBlocksOthersNorWaitsSilently) {
  Cluster c;
  ASSERT_TRUE(c.StartTernd());
  c.AddWorker("w1", 2, {"FAKE_RANK_STEP_MS=20"});
  ASSERT_TRUE(c.WaitForWorkers(1, seconds(10)));
  CliResult stuck = c.Tern({"submit", c.WriteSpec("ok-3-nodes", 3, 3, 2)});
  ASSERT_EQ(stuck.code, 0) << stuck.err;
  const std::string stuck_id = Trim(stuck.out);
  // Submitted after it, and it fits: it runs to the end.
  CliResult next = c.Tern({"submit", c.WriteSpec("ok-after", 3, 1, 2), "--watch"});
  EXPECT_EQ(next.code, 0) << next.out << next.err;
  auto job = Json(c.Tern({"show", stuck_id, "--json"}));
  EXPECT_EQ(job["state"], "PENDING");
  const std::string want =
      "waiting for 3 nodes x 2 slots; cluster has 1 live worker with 2 free slots (of 2); it "
      "cannot start until workers with 2 slots join";
  EXPECT_NE(job["message"].get<std::string>().find(want), std::string::npos) << job.dump();
  CliResult table = c.Tern({"jobs"});
  EXPECT_NE(table.out.find("waiting for 3 nodes x 2 slots"), std::string::npos) << table.out;
  CliResult show = c.Tern({"show", stuck_id});
  EXPECT_NE(show.out.find("message:  waiting for 3 nodes"), std::string::npos) << show.out;
}

}  // namespace
}  // namespace tern::testing
