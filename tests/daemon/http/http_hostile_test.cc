// Hostile HTTP clients against a real ternd (fake-rank workers): requests without or with
// wrong tokens on every job-data route, idle and half-sent connections, more connections
// than the cap. Each test asserts the status, that the message names the problem, and that
// the jobs submitted before are still served. The Cluster kills what it started.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/daemon/cluster_harness.h"

namespace tern::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

// A raw TCP connection to ternd's HTTP port; closed on destruction.
class Conn {
 public:
  explicit Conn(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  ~Conn() { ::close(fd_); }
  bool connected() const { return connected_; }
  void Send(const std::string& s) { (void)::send(fd_, s.data(), s.size(), MSG_NOSIGNAL); }
  // What arrives within `wait` (until the peer closes or the wait ends); `closed` says which.
  std::string Read(milliseconds wait, bool* closed) {
    std::string out;
    *closed = false;
    const auto end = Clock::now() + wait;
    while (Clock::now() < end) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) {
        *closed = true;
        break;
      }
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

httplib::Client Client(const Cluster& c, int timeout_s = 10) {
  httplib::Client cli("127.0.0.1", c.http_port());
  cli.set_connection_timeout(timeout_s, 0);
  cli.set_read_timeout(timeout_s, 0);
  return cli;
}

int Status(httplib::Client& cli, const std::string& path, const httplib::Headers& h = {},
           std::string* body = nullptr) {
  auto res = cli.Get(path.c_str(), h);
  if (!res) return -1;
  if (body) *body = res->body;
  return res->status;
}

std::string SubmitSleeper(Cluster& c, const std::string& token) {
  CliResult sub = c.Tern({"submit", c.WriteSpec("sleep-forever", 100, 1, 1)}, token);
  EXPECT_EQ(sub.code, 0) << sub.err;
  return sub.out.substr(0, sub.out.find('\n'));
}

TEST(HttpHostile, EveryJobDataRouteNeedsAToken) {
  ClusterOptions o;
  o.admin_token = "admin-secret";
  o.worker_token = "worker-secret";
  o.read_token = "read-secret";
  Cluster c(o);
  ASSERT_TRUE(c.StartTernd());
  c.AddWorker("w1", 1, {}, "worker-secret");
  ASSERT_TRUE(c.WaitForWorkers(1, seconds(10)));
  const std::string id = SubmitSleeper(c, "admin-secret");
  auto cli = Client(c);
  const std::vector<std::string> routes = {"/api/cluster", "/api/jobs", "/api/jobs/" + id,
                                           "/api/jobs/" + id + "/logs/0", "/metrics"};
  const httplib::Headers none, wrong = {{"Authorization", "Bearer read-secreT"}},
                               bare = {{"Authorization", "read-secret"}},
                               read = {{"Authorization", "Bearer read-secret"}},
                               cookie = {{"Cookie", "a=b; tern_token=read%2Dsecret"}};
  for (const auto& path : routes) {
    std::string body;
    EXPECT_EQ(Status(cli, path, none, &body), 401) << path;
    EXPECT_NE(body.find("this ternd needs a token for job data"), std::string::npos) << body;
    EXPECT_EQ(Status(cli, path, wrong, &body), 401) << path;
    EXPECT_NE(body.find("invalid bearer token"), std::string::npos) << body;
    EXPECT_EQ(Status(cli, path, bare), 401) << path;
    const int ok = Status(cli, path, read);
    // A rank log may not exist yet: 404 then names the rank, not the token.
    EXPECT_TRUE(ok == 200 || (ok == 404 && path.find("/logs/") != std::string::npos))
        << path << " " << ok;
    EXPECT_EQ(Status(cli, path, cookie), Status(cli, path, read)) << path;
  }
  auto res = cli.Get("/api/jobs", none);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->get_header_value("WWW-Authenticate"), "Bearer realm=\"ternd\"");
  // The event stream: refused without a token before any event is sent.
  std::string events;
  auto stream =
      cli.Get(("/api/jobs/" + id + "/events").c_str(), none, [&](const char* d, size_t n) {
        events.append(d, n);
        return true;
      });
  ASSERT_TRUE(stream);
  EXPECT_EQ(stream->status, 401);
  EXPECT_EQ(events.find("event:"), std::string::npos) << events;
  // With the cookie (as the dashboard's EventSource sends it) the stream flows.
  std::string flowed;
  auto cli2 = Client(c, 3);
  (void)cli2.Get(("/api/jobs/" + id + "/events").c_str(), cookie, [&](const char* d, size_t n) {
    flowed.append(d, n);
    return flowed.find("event: job") == std::string::npos;  // stop after the snapshot
  });
  EXPECT_NE(flowed.find("event: job"), std::string::npos) << flowed;
  // Mutations: the admin token, from the Authorization header only (never the cookie).
  const std::string cancel = "/api/jobs/" + id + "/cancel";
  auto post = [&](const httplib::Headers& h) {
    auto r = cli.Post(cancel.c_str(), h, "", "application/json");
    return r ? r->status : -1;
  };
  EXPECT_EQ(post(read), 403);
  EXPECT_EQ(post({{"Cookie", "tern_token=admin-secret"}}), 401);
  // The page shell is public and carries no job data.
  std::string page;
  EXPECT_EQ(Status(cli, "/", none, &page), 200);
  EXPECT_EQ(page.find(id), std::string::npos);
  EXPECT_EQ(Status(cli, "/assets/app.js", none), 200);
  EXPECT_EQ(Status(cli, "/healthz", none), 200);
  // The job submitted before is still there and still running.
  std::string job;
  ASSERT_EQ(Status(cli, "/api/jobs/" + id, read, &job), 200);
  EXPECT_EQ(nlohmann::json::parse(job)["state"], "RUNNING");
  // Prometheus with the read token.
  std::string metrics;
  EXPECT_EQ(Status(cli, "/metrics", read, &metrics), 200);
  EXPECT_NE(metrics.find("tern_"), std::string::npos);
}

TEST(HttpHostile, IdleAndHalfSentConnectionsDoNotStarveTheDashboard) {
  Cluster c;
  ASSERT_TRUE(c.StartTernd());
  const std::string id = SubmitSleeper(c, "");
  std::vector<std::unique_ptr<Conn>> idle;
  for (int i = 0; i < 64; ++i) {
    idle.push_back(std::make_unique<Conn>(c.http_port()));
    ASSERT_TRUE(idle.back()->connected()) << i;
    if (i % 2) idle.back()->Send("GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
  }
  std::this_thread::sleep_for(milliseconds(200));  // let ternd accept them all
  auto cli = Client(c, 5);
  const auto start = Clock::now();
  std::string body;
  EXPECT_EQ(Status(cli, "/api/jobs/" + id, {}, &body), 200) << body;
  EXPECT_EQ(Status(cli, "/healthz"), 200);
  EXPECT_LT(Clock::now() - start, seconds(2));
  EXPECT_EQ(nlohmann::json::parse(body)["id"], id);
}

TEST(HttpHostile, PastTheConnectionCapA503AndIdleConnectionsAreCut) {
  ClusterOptions o;
  o.ternd_args = {"--http-max-connections", "8",  "--http-max-event-streams", "4",
                  "--http-idle-timeout",    "1s", "--http-request-timeout",   "2s"};
  Cluster c(o);
  ASSERT_TRUE(c.StartTernd());
  std::vector<std::unique_ptr<Conn>> conns;
  for (int i = 0; i < 12; ++i) conns.push_back(std::make_unique<Conn>(c.http_port()));
  // The four past the cap are answered at once and closed; the first eight are cut after the
  // idle timeout.
  int refused = 0, cut = 0;
  for (auto& conn : conns) {
    bool closed = false;
    const std::string got = conn->Read(milliseconds(2500), &closed);
    if (got.rfind("HTTP/1.1 503", 0) == 0) {
      ++refused;
      EXPECT_NE(got.find("too many connections"), std::string::npos) << got;
    } else if (closed && got.empty()) {
      ++cut;
    }
  }
  EXPECT_EQ(refused, 4);
  EXPECT_EQ(cut, 8);
  // A slow sender is cut after the request timeout, without an answer to the half request.
  Conn slow(c.http_port());
  const auto start = Clock::now();
  bool closed = false;
  for (int i = 0; i < 6 && !closed; ++i) {
    slow.Send("G");
    (void)slow.Read(milliseconds(500), &closed);
  }
  EXPECT_TRUE(closed);
  EXPECT_LT(Clock::now() - start, milliseconds(2900));
  // And the dashboard answers.
  auto cli = Client(c, 5);
  EXPECT_EQ(Status(cli, "/api/cluster"), 200);
}

TEST(HttpHostile, EventStreamsMayTakeAtMostHalfTheConnections) {
  Cluster probe;
  Process bad(
      {probe.bin("ternd"), "--listen", "127.0.0.1:0", "--state-dir", probe.dir() + "/state",
       "--http", "127.0.0.1:0", "--http-max-connections", "10", "--http-max-event-streams", "6"},
      {}, probe.dir() + "/ternd.log");
  EXPECT_EQ(bad.Wait(seconds(10)), 1);
  EXPECT_NE(probe.ReadFile(probe.dir() + "/ternd.log")
                .find("--http-max-event-streams 6 must be 0..5 (half of --http-max-connections)"),
            std::string::npos)
      << probe.ReadFile(probe.dir() + "/ternd.log");
}

}  // namespace
}  // namespace tern::testing
