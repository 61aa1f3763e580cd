// Browser test: Debian's headless Chromium (driven through chromedriver's WebDriver HTTP
// API) against a real ternd with two tern-workers running a short real training job. The
// job row appears, the loss chart gains points while the job runs, the state reaches
// SUCCEEDED, the page requests nothing from another host (and trips no CSP report), the job
// name renders as text, and a screenshot is kept under <build>/Testing/dashboard/.
// Chromium missing is a failure, not a skip: deploy/lib.sh installs it.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "tests/daemon/cluster_harness.h"

namespace tern::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr char kChromium[] = "/usr/bin/chromium";
constexpr char kDriver[] = "/usr/bin/chromedriver";

std::string Base64Decode(const std::string& in) {
  static const std::string chars =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  int val = 0, bits = -8;
  for (char c : in) {
    const size_t pos = chars.find(c);
    if (pos == std::string::npos) continue;
    val = (val << 6) + static_cast<int>(pos);
    bits += 6;
    if (bits >= 0) {
      out.push_back(static_cast<char>((val >> bits) & 0xFF));
      bits -= 8;
    }
  }
  return out;
}

// chromedriver in its own process group (so the browsers it starts die with it).
class Driver {
 public:
  explicit Driver(const std::string& log) : log_(log) {
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      FILE* f = std::freopen(log.c_str(), "w", stdout);
      (void)f;
      ::dup2(1, 2);
      ::execl(kDriver, kDriver, "--port=0", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::setpgid(pid_, pid_);
  }
  ~Driver() {
    if (pid_ <= 0) return;
    ::kill(-pid_, SIGTERM);
    for (int i = 0; i < 50 && ::waitpid(pid_, nullptr, WNOHANG) == 0; ++i) {
      std::this_thread::sleep_for(milliseconds(20));
    }
    ::kill(-pid_, SIGKILL);  // the group: chromedriver and any browser left behind
    ::waitpid(pid_, nullptr, 0);
  }
  // The port from "ChromeDriver was started successfully on port N", 0 on timeout.
  int WaitForPort() {
    const std::regex re("started successfully on port ([0-9]+)");
    for (int i = 0; i < 500; ++i) {
      std::ifstream in(log_);
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      std::smatch m;
      if (std::regex_search(text, m, re)) return std::stoi(m[1]);
      std::this_thread::sleep_for(milliseconds(20));
    }
    return 0;
  }

 private:
  std::string log_;
  pid_t pid_ = -1;
};

// A WebDriver session (W3C protocol over plain HTTP).
class Browser {
 public:
  Browser(int driver_port, const std::string& profile) : http_("127.0.0.1", driver_port) {
    http_.set_read_timeout(60, 0);
    nlohmann::json args = {"--headless",
                           "--no-sandbox",
                           "--disable-gpu",
                           "--disable-quic",
                           "--no-first-run",
                           "--disable-background-networking",
                           "--disable-component-update",
                           "--disable-sync",
                           "--disable-dev-shm-usage",
                           "--window-size=1400,2000",
                           "--user-data-dir=" + profile};
    nlohmann::json caps = {{"capabilities",
                            {{"alwaysMatch",
                              {{"browserName", "chrome"},
                               {"goog:chromeOptions", {{"binary", kChromium}, {"args", args}}}}}}}};
    auto v = Call("POST", "/session", caps);
    if (v.is_object() && v.contains("sessionId")) session_ = v["sessionId"];
  }
  ~Browser() {
    if (!session_.empty()) Call("DELETE", "/session/" + session_, nullptr);
  }
  bool ok() const { return !session_.empty(); }
  const std::string& error() const { return error_; }

  bool Navigate(const std::string& url) {
    return !Call("POST", Path("/url"), {{"url", url}}).is_discarded();
  }
  nlohmann::json Execute(const std::string& script, const nlohmann::json& args) {
    return Call("POST", Path("/execute/sync"), {{"script", script}, {"args", args}});
  }
  std::string ScreenshotPng() {
    auto v = Call("GET", Path("/screenshot"), nullptr);
    return v.is_string() ? Base64Decode(v.get<std::string>()) : "";
  }

 private:
  std::string Path(const std::string& p) const { return "/session/" + session_ + p; }
  // The response's "value"; discarded JSON on a transport or WebDriver error (see error()).
  nlohmann::json Call(const std::string& method, const std::string& path,
                      const nlohmann::json& body) {
    httplib::Result res = method == "GET" ? http_.Get(path.c_str())
                          : method == "DELETE"
                              ? http_.Delete(path.c_str())
                              : http_.Post(path.c_str(), body.dump(), "application/json");
    if (!res) {
      error_ = method + " " + path + ": no response from chromedriver";
      return nlohmann::json::value_t::discarded;
    }
    auto j = nlohmann::json::parse(res->body, nullptr, false);
    if (res->status != 200 || !j.is_object()) {
      error_ = method + " " + path + ": HTTP " + std::to_string(res->status) + " " + res->body;
      return nlohmann::json::value_t::discarded;
    }
    return j["value"];
  }

  httplib::Client http_;
  std::string session_;
  std::string error_;
};

// What the page shows about job `id` (arguments[0]).
constexpr char kProbe[] = R"JS(
const id = arguments[0];
const row = [...document.querySelectorAll('#jobs tbody tr')].find((r) => r.dataset.jobId === id);
const n = (el) => Number((el && el.dataset.points) || 0);
return {
  row: !!row,
  state: row ? row.querySelector('td[data-state]').dataset.state : '',
  name: row ? row.querySelector('.name-cell').textContent : '',
  selected: document.getElementById('job-id').textContent,
  live_state: document.getElementById('job-state').dataset.state || '',
  stream_items: Number(document.getElementById('job').dataset.streamItems || 0),
  now: performance.now(),
  redraw_ms: Number(document.getElementById('job').dataset.redrawMs || 0),
  running_growth: Number(document.getElementById('chart-loss').dataset.runningGrowth || 0),
  points: n(document.getElementById('chart-loss')),
  time_points: n(document.getElementById('chart-time')),
  ckpt_points: n(document.getElementById('chart-ckpt')),
  kinds: [...new Set([...document.querySelectorAll('#events tbody tr')].map((r) => r.dataset.kind))],
  workers: document.querySelectorAll('#workers tbody tr').length,
  logs: [...document.querySelectorAll('#logs pre')].map((p) => p.textContent),
  ckpt_labels: [...document.querySelectorAll('#events tbody tr[data-kind="checkpoint"] td.message span.field b')]
    .map((b) => b.textContent),
  messages: [...document.querySelectorAll('#events tbody td.message')].map((td) => td.textContent),
  csp: Number(document.body.dataset.cspViolations || 0),
  scripts: document.scripts.length,
  injected: document.querySelectorAll('#jobs img, #jobs script, #job img').length,
  charts_missing: !document.getElementById('charts-missing').hidden,
  origin: location.origin,
  resources: performance.getEntriesByType('resource').map((e) => e.name),
};
)JS";

TEST(DashboardBrowserTest, LiveJobInHeadlessChromium) {
  ASSERT_EQ(::access(kChromium, X_OK), 0)
      << kChromium << " is missing --> hint: apt-get install chromium (deploy/lib.sh)";
  ASSERT_EQ(::access(kDriver, X_OK), 0)
      << kDriver << " is missing --> hint: apt-get install chromium-driver (deploy/lib.sh)";
  const auto t_start = std::chrono::steady_clock::now();
  Cluster c;
  ASSERT_TRUE(c.StartTernd());
  CliResult prep = c.PrepareCorpus(0.1);
  ASSERT_EQ(prep.code, 0) << prep.out << prep.err;
  for (const char* name : {"r1", "r2"}) c.AddWorker(name, 1, {}, "", "1s", "tern");
  ASSERT_TRUE(c.WaitForWorkers(2, seconds(10)));

  Driver driver(c.dir() + "/chromedriver.log");
  const int driver_port = driver.WaitForPort();
  ASSERT_GT(driver_port, 0) << c.ReadFile(c.dir() + "/chromedriver.log");
  Browser browser(driver_port, c.dir() + "/chromium-profile");
  ASSERT_TRUE(browser.ok()) << browser.error();
  const std::string origin = "http://127.0.0.1:" + std::to_string(c.http_port());
  ASSERT_TRUE(browser.Navigate(origin + "/")) << browser.error();

  // A real job, submitted after the page is up; its name is markup that must stay text.
  const std::string name = "<img src=x onerror=alert(1)><script>alert(2)</script>";
  const int iters = 1500;
  nlohmann::json spec = {
      {"name", name},
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
      {"train_iters", iters},
      {"eval_interval", 500},
      {"eval_iters", 1},
      {"checkpoint", {{"dir", c.dir() + "/ckpt"}, {"interval", 500}}},
      {"resources", {{"nodes", 2}, {"ranks_per_node", 1}, {"threads_per_rank", 1}}}};
  std::ofstream(c.dir() + "/job.json") << spec.dump();
  CliResult sub = c.Tern({"submit", c.dir() + "/job.json"});
  ASSERT_EQ(sub.code, 0) << sub.out << sub.err;
  const std::string id = sub.out.substr(0, sub.out.find('\n'));

  // Poll the page until it shows the job finished with every step charted.
  nlohmann::json last, samples = nlohmann::json::array();
  int running_samples = 0, grew_while_running = 0, prev_running_points = -1;
  bool saw_row = false;
  const auto deadline = std::chrono::steady_clock::now() + seconds(40);
  while (std::chrono::steady_clock::now() < deadline) {
    auto probe = browser.Execute(kProbe, {id});
    ASSERT_FALSE(probe.is_discarded()) << browser.error();  // e.g. an alert() popped up
    last = probe;
    samples.push_back({probe["now"], probe["live_state"], probe["state"], probe["points"],
                       probe["stream_items"], probe["running_growth"], probe["redraw_ms"]});
    saw_row |= probe["row"].get<bool>();
    // The selected job's state as its live event stream reports it.
    if (probe["selected"] == id && probe["live_state"] == "RUNNING") {
      const int points = probe["points"];
      ++running_samples;
      if (prev_running_points >= 0 && points > prev_running_points) ++grew_while_running;
      prev_running_points = points;
    }
    if (probe["state"] == "SUCCEEDED" && probe["points"] == iters) break;
    std::this_thread::sleep_for(milliseconds(150));
  }
  // Keep what the browser showed, pass or fail.
  const std::filesystem::path artifacts =
      std::filesystem::path(std::getenv("TERN_BIN_DIR") ? std::getenv("TERN_BIN_DIR") : "build/bin")
          .parent_path() /
      "Testing" / "dashboard";
  std::filesystem::create_directories(artifacts);
  const std::string png = browser.ScreenshotPng();
  std::ofstream(artifacts / "dashboard.png", std::ios::binary) << png;
  std::ofstream(artifacts / "probe.json") << last.dump(2) << "\n";
  std::ofstream(artifacts / "samples.json") << samples.dump() << "\n";
  EXPECT_GT(png.size(), 1000u);
  EXPECT_EQ(png.substr(1, 3), "PNG");

  SCOPED_TRACE(last.dump(2));
  EXPECT_TRUE(saw_row) << "the job row never appeared";
  EXPECT_EQ(last["state"], "SUCCEEDED");
  EXPECT_EQ(last["selected"], id);
  EXPECT_EQ(last["points"], iters) << "one loss point per step";
  EXPECT_EQ(last["time_points"], iters);
  EXPECT_GE(last["ckpt_points"].get<int>(), 1) << "checkpoint GiB/s charted";
  EXPECT_FALSE(last["charts_missing"].get<bool>());
  // Growth while running, as the page saw it at each redraw (it redraws from its stream even
  // when a busy machine starves its timers and the probes) and, when the probes got through
  // during the run, as the test saw it.
  EXPECT_GE(last["running_growth"].get<int>(), 1)
      << "the loss chart did not gain points while running";
  if (running_samples >= 2) {
    EXPECT_GE(grew_while_running, 1) << "probes saw no growth while running";
  }
  EXPECT_EQ(last["workers"], 2);
  // Markup in the name is text: no element was created from it, no alert fired.
  EXPECT_EQ(last["name"], name);
  EXPECT_EQ(last["injected"], 0);
  EXPECT_EQ(last["scripts"], 2);
  const auto kinds = last["kinds"].get<std::vector<std::string>>();
  for (const char* k : {"submitted", "scheduled", "checkpoint", "state"}) {
    EXPECT_NE(std::find(kinds.begin(), kinds.end(), k), kinds.end()) << "event kind " << k;
  }
  // A checkpoint event reads as labelled fields, and no event shows a raw JSON payload.
  const auto labels = last["ckpt_labels"].get<std::vector<std::string>>();
  for (const char* l : {"step", "size", "rate", "dir"}) {
    EXPECT_NE(std::find(labels.begin(), labels.end(), l), labels.end()) << "checkpoint " << l;
  }
  for (const auto& m : last["messages"]) EXPECT_NE(m.get<std::string>().rfind("{", 0), 0u) << m;
  // The rank log panes show `tern train`'s progress lines, not the JSON the rank printed.
  bool logs = false;
  for (const auto& l : last["logs"]) {
    logs |= l.get<std::string>().find(" | loss ") != std::string::npos;
    EXPECT_EQ(l.get<std::string>().find("\"type\":"), std::string::npos) << l;
  }
  EXPECT_TRUE(logs) << "a rank's log tail is shown";
  // Nothing from another host: every resource the page loaded came from ternd, and the
  // same-origin CSP never had to block anything.
  EXPECT_EQ(last["origin"], origin);
  EXPECT_EQ(last["csp"], 0);
  ASSERT_GE(last["resources"].size(), 3u);
  for (const auto& r : last["resources"]) {
    EXPECT_EQ(r.get<std::string>().rfind(origin + "/", 0), 0u) << r;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t_start, seconds(60));
}

}  // namespace
}  // namespace tern::testing
