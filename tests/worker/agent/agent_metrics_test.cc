// tern-worker's /metrics exposition (AgentMetrics), checked by the strict format checker.
#include "worker/agent/agent_metrics.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "tests/infra/http/prom_check.h"

namespace tern::agent {
namespace {

using tern::testing::CheckPrometheusText;

TEST(PrometheusTest, WorkerExpositionParses) {
  AgentMetrics m;
  m.OnSessionUp();
  tern::v1::WorkerMessage started;
  started.mutable_started()->set_job_id("j-1");
  m.OnQueued(started);
  tern::v1::WorkerMessage point;
  point.mutable_metric()->set_job_id("j-1");
  point.mutable_metric()->set_kind("step");
  point.mutable_metric()->set_step(7);
  (*point.mutable_metric()->mutable_values())["loss"] = 3.25;
  m.OnQueued(point);
  tern::v1::WorkerMessage ckpt;
  ckpt.mutable_event()->set_kind("checkpoint");
  ckpt.mutable_event()->set_message(R"({"step":5,"bytes":4096,"seconds":0.25,"gibps":1})");
  m.OnQueued(ckpt);
  tern::v1::WorkerMessage exited;
  exited.mutable_exited()->set_exit_code(3);
  m.OnSent(exited);
  const std::string text = m.Render({"node-\"1\"", 4, 1, 2});
  std::map<std::string, double> s;
  ASSERT_EQ(CheckPrometheusText(text, &s), "") << text;
  const std::string w = "worker=\"node-\\\"1\\\"\"";
  EXPECT_EQ(s.at("tern_worker_slots{" + w + "}"), 4);
  EXPECT_EQ(s.at("tern_worker_connected{" + w + "}"), 1);
  EXPECT_EQ(s.at("tern_worker_rank_starts_total{" + w + "}"), 1);
  EXPECT_EQ(s.at("tern_worker_rank_failures_total{" + w + "}"), 1);
  EXPECT_EQ(s.at("tern_worker_checkpoint_bytes_total{" + w + "}"), 4096);
  EXPECT_EQ(s.at("tern_worker_rank_step{" + w + ",job=\"j-1\",rank=\"0\"}"), 7);
  EXPECT_EQ(s.at("tern_worker_rank_loss{" + w + ",job=\"j-1\",rank=\"0\"}"), 3.25);
}

}  // namespace
}  // namespace tern::agent
