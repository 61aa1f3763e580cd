// JobStats: goodput inputs and the elastic incidents it derives from a job's events and
// metric points (cause, detection bound, time to resume, steps lost).
#include "daemon/state/job_stats.h"

#include <gtest/gtest.h>

#include <string>

namespace tern::daemon {
namespace {

tern::v1::WatchJobResponse Step(int round, int64_t step, int64_t time_ms) {
  tern::v1::WatchJobResponse item;
  auto* m = item.mutable_metric();
  m->set_kind("step");
  m->set_round(round);
  m->set_step(step);
  m->set_time_ms(time_ms);
  (*m->mutable_values())["step_ms"] = 100;
  return item;
}

tern::v1::WatchJobResponse Event(const std::string& kind, const std::string& message,
                                 int64_t time_ms) {
  tern::v1::WatchJobResponse item;
  auto* e = item.mutable_event();
  e->set_kind(kind);
  e->set_message(message);
  e->set_time_ms(time_ms);
  return item;
}

TEST(JobStatsTest, AnIncidentRecordsCauseDetectionResumeAndStepsLost) {
  JobStats stats;
  for (int s = 1; s <= 10; ++s) stats.Observe("j", Step(1, s, 1000 + 100 * s));
  // A rank finishing normally is not an incident.
  stats.Observe("j", Event("rank_exit", "rank 1 finished (exit 0) on w2", 2050));
  stats.Observe("j", Event("node_lost", "worker w2 lost", 2300));
  stats.Observe("j", Event("round_stopped", "round 1 stopped: worker w2 lost", 2301));
  stats.Observe("j", Event("reshard", "{}", 4000));
  stats.Observe("j", Event("resume", R"({"step": 9, "checkpoint": "x"})", 4500));
  stats.Observe("j", Step(2, 10, 4800));
  stats.Observe("j", Step(2, 11, 4900));
  const JobAggregate* a = stats.Find("j");
  ASSERT_NE(a, nullptr);
  ASSERT_EQ(a->incidents.size(), 1u);
  const Incident& inc = a->incidents[0];
  EXPECT_EQ(inc.cause, "node_lost");
  EXPECT_EQ(inc.round, 1);
  EXPECT_DOUBLE_EQ(inc.detect_s(), 0.3);  // last good step at 2000 ms, cause at 2300 ms
  EXPECT_DOUBLE_EQ(inc.resume_s(), 2.5);  // first step of round 2 at 4800 ms
  EXPECT_EQ(inc.steps_lost(), 1);         // reported 10, resumed from 9
  // A second incident (a grow) opens its own record.
  stats.Observe("j", Event("grow", "growing from 1 to 2 node(s)", 5000));
  stats.Observe("j", Event("round_stopped", "round 2 stopped: growing", 5001));
  ASSERT_EQ(a->incidents.size(), 2u);
  EXPECT_EQ(a->incidents[1].cause, "grow");
  EXPECT_LT(a->incidents[1].resume_s(), 0);  // not resumed yet
  EXPECT_EQ(a->incidents[1].steps_lost(), -1);
  // The grown round was stopped on an order: it trains (and checkpoints) step 12 after
  // round_stopped and the next round resumes from it: nothing lost.
  stats.Observe("j", Step(2, 12, 5100));
  stats.Observe("j", Event("resume", R"({"step": 12})", 5500));
  stats.Observe("j", Step(3, 13, 5700));
  EXPECT_EQ(a->incidents[1].steps_lost(), 0);
  EXPECT_DOUBLE_EQ(a->incidents[1].resume_s(), 0.7);

  tern::v1::Job job;
  job.set_started_ms(1000);
  job.set_finished_ms(6000);
  AttachStats(a, 6000, &job);
  ASSERT_EQ(job.incidents_size(), 2);
  EXPECT_EQ(job.incidents(0).cause(), "node_lost");
  EXPECT_EQ(job.incidents(0).steps_lost(), 1);
  EXPECT_EQ(job.incidents(1).round(), 2);
  EXPECT_EQ(job.incidents(1).steps_lost(), 0);
  EXPECT_DOUBLE_EQ(job.goodput(), Goodput(*a, job, 6000));
  AttachStats(nullptr, 6000, &job);
  EXPECT_EQ(job.incidents_size(), 0);
  EXPECT_EQ(job.goodput(), -1);
}

}  // namespace
}  // namespace tern::daemon
