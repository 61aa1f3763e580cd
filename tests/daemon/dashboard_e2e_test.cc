// End-to-end: real ternd + tern-worker processes (fake ranks) and the HTTP side: /api JSON,
// the SSE job stream and its Last-Event-ID resume, rank log tails, the admin-only cancel,
// the Host check, Prometheus /metrics on ternd and on each tern-worker, and the job's
// TensorBoard event file read back by an independent Python reader.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "tests/daemon/cluster_harness.h"
#include "tests/infra/http/prom_check.h"

namespace tern::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

struct SseBlock {
  std::string id, event, data;
};

std::vector<SseBlock> ParseSse(const std::string& text) {
  std::vector<SseBlock> out;
  std::istringstream in(text);
  std::string line;
  SseBlock b;
  bool any = false;
  while (std::getline(in, line)) {
    if (line.empty()) {
      if (any) out.push_back(b);
      b = {};
      any = false;
      continue;
    }
    if (line[0] == ':') continue;
    const size_t colon = line.find(": ");
    const std::string field = line.substr(0, colon), value = line.substr(colon + 2);
    if (field == "id") b.id = value;
    if (field == "event") b.event = value;
    if (field == "data") b.data = value;
    any = field != "retry";
  }
  return out;
}

std::unique_ptr<httplib::Client> Http(const Cluster& c) {
  auto cli = std::make_unique<httplib::Client>("127.0.0.1", c.http_port());
  cli->set_read_timeout(20, 0);
  return cli;
}

// The whole SSE stream of a job (it ends after the job's terminal event).
std::string ReadEvents(const Cluster& c, const std::string& id, const std::string& last_id = "",
                       const std::string& token_cookie = "") {
  auto cli = Http(c);
  httplib::Headers h = {{"Accept-Encoding", "gzip, deflate, br"}};  // as browsers send
  if (!last_id.empty()) h.emplace("Last-Event-ID", last_id);
  if (!token_cookie.empty()) h.emplace("Cookie", "theme=dark; tern_token=" + token_cookie);
  std::string body;
  auto res = cli->Get(("/api/jobs/" + id + "/events").c_str(), h, [&](const char* data, size_t n) {
    body.append(data, n);
    return true;
  });
  EXPECT_TRUE(res && res->status == 200) << (res ? res->status : -1);
  if (res) {
    EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
    EXPECT_EQ(res->get_header_value("Content-Encoding"), "") << "a compressed stream stalls";
  }
  return body;
}

std::map<std::string, double> Scrape(int port, std::string* text_out = nullptr) {
  httplib::Client cli("127.0.0.1", port);
  auto res = cli.Get("/metrics");
  EXPECT_TRUE(res && res->status == 200);
  if (!res) return {};
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  std::map<std::string, double> samples;
  EXPECT_EQ(CheckPrometheusText(res->body, &samples), "") << res->body;
  if (text_out) *text_out = res->body;
  return samples;
}

int ReadPort(const std::string& path) {
  for (int i = 0; i < 500; ++i) {
    std::ifstream in(path);
    int port = 0;
    if (in >> port && port > 0) return port;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return 0;
}

// Fake rank losses: 50000 / (step + 9) / 10000, printed with 4 decimals.
double FakeLoss(int step) { return (50000 / (step + 9)) / 10000.0; }

TEST(DashboardE2ETest, FakeJobThroughApiStreamMetricsAndTensorBoard) {
  Cluster c;
  ASSERT_TRUE(c.StartTernd());
  ASSERT_GT(c.http_port(), 0);
  for (const char* w : {"w1", "w2"}) {
    c.AddWorker(w, 1, {"FAKE_RANK_STEP_MS=30"}, "", "1s", "",
                {"--metrics", "127.0.0.1:0", "--metrics-port-file", c.dir() + "/" + w + ".mport"});
  }
  ASSERT_TRUE(c.WaitForWorkers(2, seconds(10)));
  const std::string name = "<script>alert(1)</script>";
  auto spec = nlohmann::json::parse(c.ReadFile(c.WriteSpec("xss", 8, 2, 1)));
  spec["name"] = name;
  std::ofstream(c.dir() + "/xss.json") << spec.dump();
  CliResult r = c.Tern({"submit", c.dir() + "/xss.json", "--watch", "--json"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const std::string id = nlohmann::json::parse(r.out.substr(0, r.out.find('\n')))["id"];
  auto cli = Http(c);

  // The page: static, self-contained, served under a same-origin CSP.
  auto page = cli->Get("/");
  ASSERT_TRUE(page && page->status == 200);
  EXPECT_NE(page->get_header_value("Content-Security-Policy").find("default-src 'self'"),
            std::string::npos);
  EXPECT_EQ(page->get_header_value("X-Content-Type-Options"), "nosniff");
  EXPECT_EQ(cli->Get("/assets/chart.min.js")->status, 200);
  EXPECT_EQ(cli->Get("/assets/../../etc/passwd")->status, 404);

  // JSON: the name comes back verbatim (JSON-escaped), the job finished with 8 steps.
  auto jobs = nlohmann::json::parse(cli->Get("/api/jobs")->body)["jobs"];
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0]["id"], id);
  EXPECT_EQ(jobs[0]["name"], name);
  EXPECT_EQ(jobs[0]["state"], "SUCCEEDED");
  EXPECT_EQ(jobs[0]["step"], 8);
  EXPECT_EQ(jobs[0]["progress"], 1.0);
  EXPECT_GT(jobs[0]["goodput"].get<double>(), 0.0);
  EXPECT_LE(jobs[0]["goodput"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(jobs[0]["values"]["loss"].get<double>(), FakeLoss(8));
  auto one = nlohmann::json::parse(cli->Get(("/api/jobs/" + id).c_str())->body);
  EXPECT_EQ(one["spec"]["name"], name);
  EXPECT_EQ(cli->Get("/api/jobs/j-999999")->status, 404);
  auto cluster = nlohmann::json::parse(cli->Get("/api/cluster")->body);
  EXPECT_EQ(cluster["connected_workers"], 2);
  EXPECT_EQ(cluster["slots"], 2);
  ASSERT_EQ(cluster["workers"].size(), 2u);
  EXPECT_EQ(cluster["workers"][0]["state"], "CONNECTED");
  EXPECT_LT(cluster["workers"][0]["heartbeat_age_ms"].get<int64_t>(), 3000);

  // SSE: snapshot, history in order, the end.
  auto blocks = ParseSse(ReadEvents(c, id));
  ASSERT_GE(blocks.size(), 12u);
  EXPECT_EQ(blocks.front().event, "job");
  EXPECT_EQ(blocks.back().event, "end");
  EXPECT_EQ(nlohmann::json::parse(blocks.back().data)["code"], "OK");
  std::vector<int> steps;
  std::string step4_id;
  std::set<std::string> kinds;
  for (const auto& b : blocks) {
    auto d = nlohmann::json::parse(b.data);
    if (b.event == "metric" && d["kind"] == "step") {
      steps.push_back(d["step"]);
      EXPECT_DOUBLE_EQ(d["values"]["loss"].get<double>(), FakeLoss(d["step"]));
      if (d["step"] == 4) step4_id = b.id;
    }
    if (b.event == "event") kinds.insert(d["kind"].get<std::string>());
    if (b.event == "event" || b.event == "metric") {
      EXPECT_FALSE(b.id.empty());
    }
  }
  EXPECT_EQ(steps, (std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_TRUE(kinds.count("submitted") && kinds.count("rank_ready") && kinds.count("state"));
  // Resume after step 4: only what came later.
  ASSERT_FALSE(step4_id.empty());
  auto resumed = ParseSse(ReadEvents(c, id, step4_id));
  steps.clear();
  for (const auto& b : resumed) {
    auto d = nlohmann::json::parse(b.data);
    if (b.event == "metric" && d["kind"] == "step") steps.push_back(d["step"]);
    if (b.event == "event") {
      EXPECT_NE(d["kind"], "submitted");
    }
  }
  EXPECT_EQ(steps, (std::vector<int>{5, 6, 7, 8}));
  EXPECT_EQ(resumed.front().event, "job");
  EXPECT_EQ(resumed.back().event, "end");

  // Rank log tails.
  auto log = cli->Get(("/api/jobs/" + id + "/logs/0?tail=100000").c_str());
  ASSERT_TRUE(log && log->status == 200);
  EXPECT_NE(log->body.find("fake rank 0 of 2"), std::string::npos) << log->body;
  EXPECT_NE(log->body.find(" | loss "), std::string::npos) << "progress lines: " << log->body;
  EXPECT_EQ(log->body.find("\"type\":\"step\""), std::string::npos) << log->body;
  auto tail = cli->Get(("/api/jobs/" + id + "/logs/1?tail=10").c_str());
  ASSERT_TRUE(tail && tail->status == 200);
  EXPECT_EQ(tail->body.size(), 10u);
  EXPECT_GT(std::stoll(tail->get_header_value("X-Log-Size")), 10);
  EXPECT_EQ(cli->Get(("/api/jobs/" + id + "/logs/7").c_str())->status, 404);

  // Without --auth-token-file the dashboard is read-only; foreign Host names are refused.
  auto cancel = cli->Post(("/api/jobs/" + id + "/cancel").c_str(), "", "application/json");
  ASSERT_TRUE(cancel);
  EXPECT_EQ(cancel->status, 403);
  EXPECT_NE(cancel->body.find("read-only"), std::string::npos);
  EXPECT_EQ(cli->Get("/api/jobs", {{"Host", "evil.example:80"}})->status, 421);
  EXPECT_EQ(cli->Get("/api/jobs", {{"Host", "localhost:" + std::to_string(c.http_port())}})->status,
            200);

  // Prometheus on ternd.
  auto s = Scrape(c.http_port());
  const std::string job = "{job=\"" + id + "\"}";
  EXPECT_EQ(s["tern_jobs{state=\"SUCCEEDED\"}"], 1);
  EXPECT_EQ(s["tern_jobs{state=\"RUNNING\"}"], 0);
  EXPECT_EQ(s["tern_job_step" + job], 8);
  EXPECT_EQ(s["tern_job_train_iters" + job], 8);
  EXPECT_DOUBLE_EQ(s["tern_job_loss" + job], FakeLoss(8));
  EXPECT_EQ(s["tern_job_tokens_per_second" + job], 12345.5);
  EXPECT_GT(s["tern_job_goodput_ratio" + job], 0);
  EXPECT_EQ(s["tern_job_events_total{job=\"" + id + "\",kind=\"rank_ready\"}"], 2);
  EXPECT_EQ(s["tern_workers{state=\"connected\"}"], 2);
  EXPECT_EQ(s["tern_ranks_running{}"], 0);

  // Prometheus on each tern-worker: rank 0's worker relays its steps; both report an exit.
  double relayed_step = 0;
  for (const char* w : {"w1", "w2"}) {
    const int port = ReadPort(c.dir() + "/" + w + ".mport");
    ASSERT_GT(port, 0) << w;
    auto ws = Scrape(port);
    const std::string wl = std::string("{worker=\"") + w + "\"}";
    EXPECT_EQ(ws["tern_worker_connected" + wl], 1);
    EXPECT_EQ(ws["tern_worker_rank_starts_total" + wl], 1);
    EXPECT_EQ(ws["tern_worker_rank_exits_total" + wl], 1);
    EXPECT_GT(ws["tern_worker_heartbeats_sent_total" + wl], 0);
    const std::string rs =
        std::string("tern_worker_rank_step{worker=\"") + w + "\",job=\"" + id + "\",rank=\"0\"}";
    if (ws.count(rs)) relayed_step += ws[rs];
  }
  EXPECT_EQ(relayed_step, 8);

  // TensorBoard: one event file, every record's CRC checked by the independent reader.
  const std::string tb = c.dir() + "/state/tensorboard/" + id;
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(tb)) files.push_back(e.path());
  ASSERT_EQ(files.size(), 1u);
  EXPECT_NE(files[0].find("events.out.tfevents."), std::string::npos);
  const std::string cmd = "/usr/bin/python3 " + std::string(std::getenv("TERN_SOURCE_DIR")) +
                          "/tests/daemon/http/read_tfevents.py " + files[0];
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), p)) > 0;) out.append(buf, n);
  ASSERT_EQ(WEXITSTATUS(::pclose(p)), 0) << out;
  auto events = nlohmann::json::parse(out);
  EXPECT_EQ(events["file_version"], "brain.Event:2");
  EXPECT_EQ(events["records"], 1 + 8 + 2);  // version, 8 steps, eval, summary
  int seen = 0;
  for (const auto& e : events["events"]) {
    if (!e["values"].contains("train/loss")) continue;
    ++seen;
    EXPECT_EQ(e["step"], seen);
    EXPECT_EQ(e["values"]["train/loss"].get<double>(),
              static_cast<double>(static_cast<float>(FakeLoss(seen))));
    EXPECT_EQ(e["values"]["train/tokens_per_s"].get<double>(), 12345.5);
  }
  EXPECT_EQ(seen, 8);
  EXPECT_EQ(events["events"][8]["values"]["eval/val_loss"], 2.5);
  EXPECT_EQ(events["events"][8]["step"], 8);
}

TEST(DashboardE2ETest, CancelWorksOnlyWithTheAdminToken) {
  ClusterOptions o;
  o.admin_token = "admin-secret";
  o.worker_token = "worker-secret";
  Cluster c(o);
  ASSERT_TRUE(c.StartTernd());
  c.AddWorker("w1", 1, {}, "worker-secret");
  ASSERT_TRUE(c.WaitForWorkers(1, seconds(10)));
  CliResult sub = c.Tern({"submit", c.WriteSpec("sleep-forever", 100, 1, 1)}, "admin-secret");
  ASSERT_EQ(sub.code, 0) << sub.err;
  std::string id = sub.out.substr(0, sub.out.find('\n'));
  auto cli = Http(c);
  const std::string path = "/api/jobs/" + id + "/cancel";
  auto post = [&](const std::string& auth) {
    httplib::Headers h;
    if (!auth.empty()) h.emplace("Authorization", auth);
    auto res = cli->Post(path.c_str(), h, "", "application/json");
    return res ? res->status : -1;
  };
  EXPECT_EQ(post(""), 401);
  EXPECT_EQ(post("Bearer guess"), 401);
  EXPECT_EQ(post("admin-secret"), 401);  // not "Bearer <token>"
  EXPECT_EQ(post("Bearer worker-secret"), 403);
  const httplib::Headers reader = {{"Authorization", "Bearer worker-secret"}};  // any token reads
  EXPECT_EQ(nlohmann::json::parse(cli->Get(("/api/jobs/" + id).c_str(), reader)->body)["state"],
            "RUNNING");
  EXPECT_EQ(post("Bearer admin-secret"), 200);
  EXPECT_EQ(nlohmann::json::parse(cli->Get(("/api/jobs/" + id).c_str(), reader)->body)["state"],
            "CANCELLED");
  EXPECT_EQ(post("Bearer admin-secret"), 409);  // already cancelled
  // The browser's EventSource sends the token as the tern_token cookie (URL-encoded).
  auto blocks = ParseSse(ReadEvents(c, id, "", "worker%2Dsecret"));
  ASSERT_FALSE(blocks.empty());
  EXPECT_EQ(blocks.back().event, "end");
  EXPECT_NE(blocks[blocks.size() - 2].data.find("cancelled from the dashboard"), std::string::npos);
}

}  // namespace
}  // namespace tern::testing
