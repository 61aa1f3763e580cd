// What `tern watch` prints for non-step points and structured events, and the shared
// rank-output formatter behind it (worker/core/run_text.h).
#include "client/cluster/format.h"

#include <gtest/gtest.h>

#include "worker/core/run_text.h"

namespace tern::cluster {
namespace {

constexpr char kMemory[] =
    R"({"rank":0,"param_bytes":3565158,"grad_bytes":3565158,"optim_bytes":7130316,)"
    R"("gather_pool_bytes":1048576,"zero_stage":3})";
constexpr char kCheckpoint[] =
    R"({"step":100,"dir":"/ck/step-100","bytes":61865984,"seconds":0.12,"gibps":0.48,)"
    R"("stage_ms":3.5,"io_path":"io_uring","async":true,"commit_ms":1.5})";

TEST(RunText, StructuredEventsReadAsLabelledFields) {
  EXPECT_EQ(EventText("memory", kMemory),
            "rank 0, params 3.4 MiB, grads 3.4 MiB, optimizer 6.8 MiB, gather pool 1.0 MiB, "
            "ZeRO stage 3");
  EXPECT_EQ(EventText("checkpoint", kCheckpoint),
            "step 100, size 59.0 MiB, time 0.12 s, rate 0.48 GiB/s, staged 3.5 ms, commit 1.5 ms, "
            "io io_uring, async yes, dir /ck/step-100");
  EXPECT_EQ(EventText("resume", R"({"step":40,"checkpoint":"/ck/step-40","seconds":0.5})"),
            "step 40, time 0.50 s, from /ck/step-40");
  // Unknown keys keep their names; plain text stays as it is.
  EXPECT_EQ(EventText("rank", R"({"what":"x","n":2})"), "n 2, what x");
  EXPECT_EQ(EventText("state", "round 1: RUNNING"), "round 1: RUNNING");
  EXPECT_TRUE(EventFields("state", "{not json").empty());
  const Fields f = EventFields("memory", kMemory);
  ASSERT_EQ(f.size(), 6u);
  EXPECT_EQ(f[4], (std::pair<std::string, std::string>{"gather pool", "1.0 MiB"}));
}

TEST(RunText, HumanLinesAreWhatTernTrainPrints) {
  const std::string step = R"({"type":"step","step":20,"total_steps":100,"loss":3.21,"lr":0.001,)"
                           R"("tokens_per_s":12345.6,"step_ms":81.04,"eta_s":65})";
  EXPECT_EQ(HumanLine(step, 10),
            "step     20/100    | loss 3.2100 | lr 1.000e-03 |    12346 tok/s |    81.0 ms/step "
            "| ETA 1m05s");
  EXPECT_EQ(HumanLine(step, 15), "") << "not due: neither every 15th, the first nor the last";
  EXPECT_EQ(HumanLine(R"({"type":"eval","step":50,"val_loss":3.1})", 10),
            "eval at step 50: val_loss 3.1000");
  EXPECT_EQ(HumanLine(std::string("{\"type\":\"event\",\"kind\":\"memory\",\"message\":") +
                          nlohmann::json(kMemory).dump() + "}",
                      10),
            "[memory] rank 0, params 3.4 MiB, grads 3.4 MiB, optimizer 6.8 MiB, gather pool "
            "1.0 MiB, ZeRO stage 3");
  EXPECT_EQ(HumanLine("loading data", 10), std::nullopt);
  EXPECT_EQ(HumanLine(R"({"type":"other"})", 10), std::nullopt);
  const nlohmann::json summary = {{"type", "summary"},
                                  {"step", 100},
                                  {"steps", 100},
                                  {"final_loss", 2.5},
                                  {"val_loss", nullptr},
                                  {"tokens_per_s", 1000},
                                  {"step_ms_median", 80},
                                  {"mfu", 0.123},
                                  {"sgemm_peak_gflops", 150},
                                  {"peak_rss_mib", 80},
                                  {"peak_source", "cached"},
                                  {"peak_cache", "/c/sgemm_peak.json"}};
  EXPECT_EQ(HumanLineOf(summary, 10),
            "done: 100 steps | final loss 2.5000 | val loss n/a | 1000 tok/s | 80.0 ms/step "
            "(median) | MFU 12.3% of 150.0 GFLOP/s sgemm peak (cached in /c/sgemm_peak.json) | "
            "peak RSS 80 MiB");
  nlohmann::json measured = summary;
  measured["peak_source"] = "measured";
  EXPECT_NE(SummaryLine(measured).find("(measured now, cached in /c/sgemm_peak.json)"),
            std::string::npos);
  measured["peak_source"] = "flag";
  EXPECT_NE(SummaryLine(measured).find("(given by --peak-gflops)"), std::string::npos);
}

TEST(Format, WatchPrintsTheSummaryAtItsStepAndEventsAsFields) {
  tern::v1::MetricPoint p;
  p.set_kind("summary");
  p.set_step(100);
  (*p.mutable_values())["steps"] = 100;
  (*p.mutable_values())["mfu"] = 0.5;
  (*p.mutable_values())["sgemm_peak_gflops"] = 10;
  const std::string line = MetricLine(p);
  EXPECT_EQ(line.rfind("summary at step 100: done: 100 steps |", 0), 0u) << line;
  EXPECT_NE(line.find("MFU 50.0% of 10.0 GFLOP/s sgemm peak"), std::string::npos) << line;
  p.set_kind("eval");
  (*p.mutable_values())["val_loss"] = 2;
  EXPECT_EQ(MetricLine(p), "eval at step 100: val_loss 2.0000");

  tern::v1::JobEvent e;
  e.set_kind("memory");
  e.set_message(kMemory);
  const std::string ev = EventLine(e);
  EXPECT_NE(ev.find(" [memory] rank 0, params 3.4 MiB, grads 3.4 MiB, optimizer 6.8 MiB"),
            std::string::npos)
      << ev;
  EXPECT_EQ(ev.find('{'), std::string::npos) << ev;
  // --json keeps the payload machine-readable: the message string as it came.
  tern::v1::WatchJobResponse item;
  *item.mutable_event() = e;
  EXPECT_EQ(WatchItemToJson(item, 0)["message"], kMemory);
}

TEST(Format, ShowPrintsGoodputAndOneLinePerIncident) {
  tern::v1::Job job;
  EXPECT_TRUE(StatsLines(job).empty());  // never started: no goodput line
  job.set_started_ms(1000);
  job.set_goodput(0.912);
  auto* lost = job.add_incidents();
  lost->set_cause("node_lost");
  lost->set_round(1);
  lost->set_detect_s(1.25);
  lost->set_resume_s(3.4);
  lost->set_steps_lost(1);
  auto* grow = job.add_incidents();
  grow->set_cause("grow");
  grow->set_round(2);
  grow->set_resume_s(-1);
  grow->set_steps_lost(-1);
  auto lines = StatsLines(job);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], "goodput:  91.2% (time in steps that count / wall time since it started)");
  EXPECT_EQ(lines[1],
            "incident: node_lost in round 1, detected 1.2s after the last step, training again "
            "3.4s later, 1 step(s) lost");
  EXPECT_EQ(lines[2],
            "incident: grow in round 2, detected 0.0s after the last step, not training again yet");
}

}  // namespace
}  // namespace tern::cluster
