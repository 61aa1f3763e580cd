// Unit tests for ternd's HTTP side: its Prometheus exposition, TensorBoard event files (read
// back by an independent Python reader), the SSE stream and its resume cursor, job stats, and
// the embedded assets (no URL to another host).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "daemon/http/dashboard_assets.h"
#include "daemon/http/http_sse.h"
#include "daemon/http/prometheus.h"
#include "daemon/http/tensorboard.h"
#include "daemon/state/job_stats.h"
#include "tests/infra/http/prom_check.h"

namespace tern::daemon {
namespace {

using tern::testing::CheckPrometheusText;

std::string TempDir() {
  char tmpl[] = "/tmp/tern-dash-XXXXXX";
  return ::mkdtemp(tmpl);
}

// Runs `cmd`, returns (exit code, stdout).
std::pair<int, std::string> RunCommand(const std::string& cmd) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return {-1, ""};
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int st = ::pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

std::string Reader() {
  const char* src = std::getenv("TERN_SOURCE_DIR");
  return std::string("/usr/bin/python3 ") + (src ? src : ".") +
         "/tests/daemon/http/read_tfevents.py";
}

tern::v1::WatchJobResponse Metric(const std::string& kind, int64_t step, int64_t time_ms,
                                  std::map<std::string, double> values) {
  tern::v1::WatchJobResponse r;
  auto* m = r.mutable_metric();
  m->set_job_id("j-000001");
  m->set_kind(kind);
  m->set_step(step);
  m->set_time_ms(time_ms);
  for (const auto& [k, v] : values) (*m->mutable_values())[k] = v;
  return r;
}

tern::v1::WatchJobResponse Event(int64_t seq, const std::string& kind, const std::string& msg,
                                 tern::v1::JobState state = tern::v1::JOB_STATE_RUNNING) {
  tern::v1::WatchJobResponse r;
  auto* e = r.mutable_event();
  e->set_job_id("j-000001");
  e->set_seq(seq);
  e->set_kind(kind);
  e->set_message(msg);
  e->set_state(state);
  e->set_time_ms(1000 + seq);
  return r;
}

TEST(PrometheusTest, TerndExpositionParses) {
  ClusterSnapshot snap;
  snap.now_ms = 20000;
  tern::v1::Job job;
  job.set_id("j-000007");
  job.mutable_spec()->set_name("we\"ird\\name\n<script>alert(1)</script>");
  job.mutable_spec()->set_train_iters(100);
  job.set_state(tern::v1::JOB_STATE_RUNNING);
  job.set_started_ms(10000);
  job.add_placement()->set_worker("w1");
  auto* m = job.mutable_last_metric();
  m->set_step(10);
  m->set_time_ms(19000);
  for (auto [k, v] : {std::pair{"loss", 2.5},
                      {"tokens_per_s", 1234.0},
                      {"step_ms", 500.0},
                      {"forward_ms", 100.0},
                      {"checkpoint_ms", 50.0},
                      {"eta_s", 45.0}}) {
    (*m->mutable_values())[k] = v;
  }
  snap.jobs.push_back(job);
  tern::v1::Job done;
  done.set_id("j-000006");
  done.set_state(tern::v1::JOB_STATE_SUCCEEDED);
  snap.jobs.push_back(done);
  JobAggregate agg;
  agg.productive_ms = 5000;
  agg.checkpoints = 2;
  agg.checkpoint_bytes = 2e9;
  agg.checkpoint_seconds = 1.5;
  agg.events_by_kind = {{"checkpoint", 2}, {"node lost", 1}};
  snap.stats["j-000007"] = agg;
  tern::v1::WorkerInfo w;
  w.set_name("w1");
  w.set_slots(2);
  w.set_used_slots(1);
  w.set_connected(true);
  w.set_last_heartbeat_ms(19500);
  snap.workers.push_back(w);
  const std::string text = RenderPrometheus(snap);
  std::map<std::string, double> s;
  ASSERT_EQ(CheckPrometheusText(text, &s), "") << text;
  EXPECT_EQ(s.at("tern_jobs{state=\"RUNNING\"}"), 1);
  EXPECT_EQ(s.at("tern_jobs{state=\"SUCCEEDED\"}"), 1);
  EXPECT_EQ(s.at("tern_jobs{state=\"FAILED\"}"), 0);
  EXPECT_EQ(s.at("tern_job_step{job=\"j-000007\"}"), 10);
  EXPECT_EQ(s.at("tern_job_loss{job=\"j-000007\"}"), 2.5);
  EXPECT_EQ(s.at("tern_job_tokens_per_second{job=\"j-000007\"}"), 1234);
  EXPECT_DOUBLE_EQ(s.at("tern_job_step_seconds{job=\"j-000007\"}"), 0.5);
  EXPECT_DOUBLE_EQ(s.at("tern_job_step_phase_seconds{job=\"j-000007\",phase=\"forward\"}"), 0.1);
  EXPECT_DOUBLE_EQ(s.at("tern_job_goodput_ratio{job=\"j-000007\"}"), 0.5);  // 5 s of 10 s
  EXPECT_DOUBLE_EQ(s.at("tern_job_eta_seconds{job=\"j-000007\"}"), 44);     // 45 - 1 s old
  EXPECT_EQ(s.at("tern_job_checkpoint_bytes_total{job=\"j-000007\"}"), 2e9);
  EXPECT_EQ(s.at("tern_job_events_total{job=\"j-000007\",kind=\"node lost\"}"), 1);
  EXPECT_EQ(s.at("tern_job_ranks{job=\"j-000007\"}"), 1);
  EXPECT_EQ(s.at("tern_workers{state=\"connected\"}"), 1);
  EXPECT_EQ(s.at("tern_ranks_running{}"), 1);
  EXPECT_DOUBLE_EQ(s.at("tern_cluster_worker_heartbeat_age_seconds{worker=\"w1\"}"), 0.5);
  EXPECT_EQ(s.at("tern_job_info{job=\"j-000007\",name=\"we\\\"ird\\\\name\\n<script>alert(1)</"
                 "script>\",state=\"RUNNING\"}"),
            1);
}

TEST(TensorBoardTest, Crc32cMatchesKnownVectors) {
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(Crc32c("", 0), 0u);
  const std::string zeros(32, '\0');
  EXPECT_EQ(Crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);  // RFC 3720 B.4
}

TEST(TensorBoardTest, IndependentReaderChecksEveryRecord) {
  const std::string dir = TempDir() + "/tb";
  auto w = TfEventWriter::Open(dir);
  ASSERT_TRUE(w.ok()) << w.status();
  const std::string path = (*w)->path();
  EXPECT_NE(path.find("/events.out.tfevents."), std::string::npos);
  for (int step = 1; step <= 3; ++step) {
    ASSERT_TRUE((*w)->WriteScalars(1700000000.25 + step, step,
                                   {{"train/loss", 4.0f / step}, {"train/lr", 1e-3f * step}})
                    .ok());
  }
  ASSERT_TRUE((*w)->WriteScalars(1700000009.5, 1LL << 40, {{"eval/val_loss", 0.1f}}).ok());
  w->reset();
  const auto read = RunCommand(Reader() + " " + path);
  ASSERT_EQ(read.first, 0) << read.second;
  const nlohmann::json j = nlohmann::json::parse(read.second);
  EXPECT_EQ(j["records"], 5);
  EXPECT_EQ(j["file_version"], "brain.Event:2");
  ASSERT_EQ(j["events"].size(), 4u);
  for (int step = 1; step <= 3; ++step) {
    const auto& e = j["events"][step - 1];
    EXPECT_EQ(e["step"], step);
    EXPECT_DOUBLE_EQ(e["wall_time"].get<double>(), 1700000000.25 + step);
    EXPECT_EQ(e["values"]["train/loss"].get<double>(), static_cast<double>(4.0f / step));
    EXPECT_EQ(e["values"]["train/lr"].get<double>(), static_cast<double>(1e-3f * step));
  }
  EXPECT_EQ(j["events"][3]["step"].get<int64_t>(), 1LL << 40);
  EXPECT_EQ(j["events"][3]["values"]["eval/val_loss"].get<double>(), static_cast<double>(0.1f));

  // A flipped byte in the last record's data is caught by the reader.
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    bytes = ss.str();
  }
  bytes[bytes.size() - 8] ^= 0x01;
  std::ofstream(dir + "/corrupt", std::ios::binary) << bytes;
  const auto bad = RunCommand(Reader() + " " + dir + "/corrupt 2>&1");
  EXPECT_EQ(bad.first, 1);
  EXPECT_NE(bad.second.find("record 4: data CRC mismatch"), std::string::npos) << bad.second;
  std::filesystem::remove_all(std::filesystem::path(dir).parent_path());
}

TEST(JobStatsTest, GoodputCountsEachStepOnceWithoutCheckpointStalls) {
  JobStats stats;
  stats.Observe("j", Metric("step", 1, 2000, {{"step_ms", 1000}, {"loss", 3}}));
  stats.Observe("j", Metric("step", 2, 3000, {{"step_ms", 1000}, {"checkpoint_ms", 500}}));
  stats.Observe("j",
                Event(1, "checkpoint", R"({"step":2,"bytes":1073741824,"seconds":0.5,"gibps":2})"));
  stats.Observe("j", Metric("step", 2, 6000, {{"step_ms", 1000}}));  // redone after a resume
  stats.Observe("j", Metric("step", 4, 8000, {{"step_ms", 1000}, {"loss", 2}}));  // 2 new steps
  stats.Observe("j", Metric("eval", 4, 8100, {{"val_loss", 2.25}}));
  stats.Observe("j",
                Event(2, "memory", R"({"rank":0,"param_bytes":1048576,"gather_pool_bytes":4096})"));
  stats.Observe("j", Event(3, "node lost", "w2 went away"));
  const JobAggregate* a = stats.Find("j");
  ASSERT_NE(a, nullptr);
  EXPECT_DOUBLE_EQ(a->productive_ms, 1000 + 500 + 2000);
  EXPECT_EQ(a->max_step, 4);
  EXPECT_EQ(a->last_step.values().at("loss"), 2);
  EXPECT_EQ(a->val_loss, 2.25);
  EXPECT_EQ(a->checkpoints, 1);
  EXPECT_EQ(a->checkpoint_bytes, 1073741824);
  EXPECT_EQ(a->last_checkpoint_gibps, 2);
  EXPECT_EQ(a->memory.at("param_bytes"), 1048576);
  EXPECT_EQ(a->memory.at("gather_pool_bytes"), 4096);
  EXPECT_EQ(a->events_by_kind.at("node lost"), 1);
  tern::v1::Job job;
  job.set_state(tern::v1::JOB_STATE_SUCCEEDED);
  job.set_started_ms(1000);
  job.set_finished_ms(11000);
  EXPECT_DOUBLE_EQ(Goodput(*a, job, 99999), 0.35);
  job.set_started_ms(0);
  EXPECT_EQ(Goodput(*a, job, 99999), 0);
}

// The dashboard renders a structured payload from ternd's labelled fields, plain text as is.
TEST(EventJsonTest, StructuredPayloadsCarryLabelledFields) {
  const auto mem = EventJson(Event(1, "memory",
                                   R"({"rank":0,"param_bytes":3565158,"grad_bytes":3565158,)"
                                   R"("optim_bytes":7130316,"gather_pool_bytes":1048576,)"
                                   R"("zero_stage":3})")
                                 .event());
  ASSERT_TRUE(mem.contains("fields")) << mem.dump();
  const nlohmann::json want = nlohmann::json::parse(
      R"([["rank","0"],["params","3.4 MiB"],["grads","3.4 MiB"],["optimizer","6.8 MiB"],)"
      R"(["gather pool","1.0 MiB"],["ZeRO stage","3"]])");
  EXPECT_EQ(mem["fields"], want);
  EXPECT_EQ(mem["message"].get<std::string>().front(), '{') << "the raw payload stays";
  const auto ckpt =
      EventJson(Event(2, "checkpoint", R"({"step":100,"bytes":61865984,"seconds":0.12})").event());
  EXPECT_EQ(ckpt["fields"],
            nlohmann::json::parse(R"([["step","100"],["size","59.0 MiB"],["time","0.12 s"]])"));
  EXPECT_FALSE(EventJson(Event(3, "state", "round 1: RUNNING").event()).contains("fields"));
  const std::string app(FindDashboardAsset("/assets/app.js")->text());
  EXPECT_NE(app.find("e.fields"), std::string::npos) << "app.js renders the fields";
}

// Pops everything until the stream ends; returns the SSE text.
std::string Drain(SseStream& s) {
  std::string out;
  for (int i = 0; i < 100; ++i) {
    if (s.Pop(std::chrono::milliseconds(100), 1 << 20, &out) == SseStream::Next::kEnd) return out;
  }
  ADD_FAILURE() << "stream did not end: " << out;
  return out;
}

void Feed(SseStream& s) {
  auto sink = s.sink();
  tern::v1::WatchJobResponse job;
  job.mutable_job()->set_id("j-000001");
  sink->Send(job);
  sink->Send(Event(1, "submitted", "job \"<b>x</b>\" submitted"));
  sink->Send(Metric("step", 1, 5000, {{"loss", 3}}));
  sink->Send(Metric("step", 2, 5000, {{"loss", 2}}));
  sink->Send(Metric("step", 3, 5001, {{"loss", 1}}));
  sink->Send(Event(2, "state", "done", tern::v1::JOB_STATE_SUCCEEDED));
  sink->Close(grpc::Status::OK);
}

TEST(SseStreamTest, StreamsWithCursorIdsAndResumes) {
  auto job_json = [](const tern::v1::Job& j) { return nlohmann::json{{"id", j.id()}}.dump(); };
  SseStream first(job_json, std::nullopt, 100);
  Feed(first);
  const std::string text = Drain(first);
  EXPECT_EQ(text,
            "event: job\ndata: {\"id\":\"j-000001\"}\n\n"
            "id: 1-0-0\nevent: event\ndata: " +
                Dump(EventJson(Event(1, "submitted", "job \"<b>x</b>\" submitted").event())) +
                "\n\n"
                "id: 1-5000-1\nevent: metric\ndata: " +
                Dump(MetricJson(Metric("step", 1, 5000, {{"loss", 3}}).metric())) +
                "\n\n"
                "id: 1-5000-2\nevent: metric\ndata: " +
                Dump(MetricJson(Metric("step", 2, 5000, {{"loss", 2}}).metric())) +
                "\n\n"
                "id: 1-5001-1\nevent: metric\ndata: " +
                Dump(MetricJson(Metric("step", 3, 5001, {{"loss", 1}}).metric())) +
                "\n\n"
                "id: 2-5001-1\nevent: event\ndata: " +
                Dump(EventJson(Event(2, "state", "done", tern::v1::JOB_STATE_SUCCEEDED).event())) +
                "\n\n"
                "event: end\ndata: {\"code\":\"OK\",\"message\":\"job ended\"}\n\n");

  // Resuming after the first metric replays only what came later.
  auto cursor = ParseSseCursor("1-5000-1");
  ASSERT_TRUE(cursor.has_value());
  SseStream resumed(job_json, cursor, 100);
  Feed(resumed);
  const std::string again = Drain(resumed);
  EXPECT_NE(again.find("event: job\n"), std::string::npos);
  EXPECT_EQ(again.find("id: 1-0-0\n"), std::string::npos);
  EXPECT_EQ(again.find("id: 1-5000-1\n"), std::string::npos);
  EXPECT_NE(again.find("id: 1-5000-2\n"), std::string::npos);
  EXPECT_NE(again.find("id: 1-5001-1\n"), std::string::npos);
  EXPECT_NE(again.find("id: 2-5001-1\n"), std::string::npos);
  EXPECT_NE(again.find("event: end\n"), std::string::npos);

  EXPECT_FALSE(ParseSseCursor("").has_value());
  EXPECT_FALSE(ParseSseCursor("1-2").has_value());
  EXPECT_FALSE(ParseSseCursor("a-b-c").has_value());
  EXPECT_FALSE(ParseSseCursor("-1-2-3").has_value());
  EXPECT_EQ(FormatSseCursor(*ParseSseCursor("12-34-5")), "12-34-5");
}

TEST(SseStreamTest, SlowReaderIsCutOffNotBuffered) {
  SseStream s([](const tern::v1::Job&) { return std::string("{}"); }, std::nullopt, 4);
  auto sink = s.sink();
  int accepted = 0;
  for (int i = 0; i < 10; ++i) accepted += sink->Send(Metric("step", i, 1000 + i, {})) ? 1 : 0;
  EXPECT_EQ(accepted, 4);
  const std::string text = Drain(s);
  EXPECT_NE(text.find("\"code\":\"CUT_OFF\""), std::string::npos) << text;
}

// The page and its scripts load nothing from another host: no absolute URL outside license
// comments, no protocol-relative src/href/url(), and only /assets/ paths in the HTML.
TEST(DashboardAssetsTest, EmbeddedAndSelfContained) {
  for (const char* path : {"/", "/assets/app.js", "/assets/app.css", "/assets/chart.min.js"}) {
    ASSERT_NE(FindDashboardAsset(path), nullptr) << path;
  }
  EXPECT_EQ(FindDashboardAsset("/etc/passwd"), nullptr);
  const std::string chart(FindDashboardAsset("/assets/chart.min.js")->text());
  EXPECT_NE(chart.find("Chart.js v3."), std::string::npos) << "Debian's Chart.js is not embedded";
  EXPECT_GT(chart.size(), 100000u);
  EXPECT_STREQ(DashboardContentType("/"), "text/html; charset=utf-8");
  EXPECT_STREQ(DashboardContentType("/assets/app.js"), "text/javascript; charset=utf-8");
  const std::regex block_comment(R"(/\*[\s\S]*?\*/)");
  const std::regex html_comment(R"(<!--[\s\S]*?-->)");
  const std::regex remote(R"((https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,})");
  const std::regex attr(R"((src|href|action)\s*=\s*["']?([^"'\s>]+))");
  const std::regex css_url(R"(url\(\s*["']?([^"')]+))");
  for (const auto& a : DashboardAssets()) {
    std::string text(a.text());
    text = std::regex_replace(text, block_comment, "");
    text = std::regex_replace(text, html_comment, "");
    EXPECT_EQ(text.find("http://"), std::string::npos) << a.path;
    EXPECT_EQ(text.find("https://"), std::string::npos) << a.path;
    EXPECT_EQ(text.find("ws://"), std::string::npos) << a.path;
    EXPECT_EQ(text.find("wss://"), std::string::npos) << a.path;
    const bool html = std::string(a.path) == "/";
    for (std::sregex_iterator it(text.begin(), text.end(), attr), end; html && it != end; ++it) {
      const std::string target = (*it)[2];
      if (target.rfind("/assets/", 0) != 0 && target.rfind("#", 0) != 0 && target != "data:,") {
        ADD_FAILURE() << a.path << " refers to " << target;
      }
    }
    for (std::sregex_iterator it(text.begin(), text.end(), css_url), end; it != end; ++it) {
      const std::string target = (*it)[1];
      if (target.rfind("data:", 0) != 0 && target.rfind("/", 0) != 0) {
        ADD_FAILURE() << a.path << " loads " << target;
      }
    }
    if (std::string(a.path) != "/assets/chart.min.js") {
      EXPECT_FALSE(std::regex_search(text, remote)) << a.path;
      EXPECT_EQ(text.find("innerHTML"), std::string::npos) << a.path << ": use textContent";
      EXPECT_EQ(text.find("insertAdjacentHTML"), std::string::npos) << a.path;
      EXPECT_EQ(text.find("document.write"), std::string::npos) << a.path;
      EXPECT_EQ(text.find("eval("), std::string::npos) << a.path;
    }
  }
}

}  // namespace
}  // namespace tern::daemon
