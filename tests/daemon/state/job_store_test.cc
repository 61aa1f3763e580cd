#include "daemon/state/job_store.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace tern::daemon {
namespace {

class JobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tern-jobstore-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string db() const { return dir_ + "/ternd.db"; }
  std::string dir_;
};

TEST_F(JobStoreTest, JobsEventsAndIdsSurviveReopen) {
  {
    auto store = OpenSqliteJobStore(db());
    ASSERT_TRUE(store.ok()) << store.status();
    EXPECT_EQ(*(*store)->NextJobId(), "j-000001");
    EXPECT_EQ(*(*store)->NextJobId(), "j-000002");
    tern::v1::Job job;
    job.set_id("j-000001");
    job.set_created_ms(100);
    job.set_state(tern::v1::JOB_STATE_PENDING);
    job.mutable_spec()->set_name("first");
    ASSERT_TRUE((*store)->PutJob(job).ok());
    job.set_state(tern::v1::JOB_STATE_RUNNING);
    job.set_round(1);
    job.add_placement()->set_worker("w1");
    ASSERT_TRUE((*store)->PutJob(job).ok());  // update in place
    ASSERT_TRUE((*store)->PutRound(job).ok());
    tern::v1::Job second;
    second.set_id("j-000002");
    second.set_created_ms(200);
    ASSERT_TRUE((*store)->PutJob(second).ok());
    for (int i = 1; i <= 3; ++i) {
      tern::v1::JobEvent e;
      e.set_job_id("j-000001");
      e.set_seq(i);
      e.set_message("event " + std::to_string(i));
      ASSERT_TRUE((*store)->AppendEvent(e).ok());
    }
    tern::v1::WorkerInfo w;
    w.set_name("w1");
    w.set_slots(4);
    ASSERT_TRUE((*store)->PutWorker(w).ok());
  }
  auto store = OpenSqliteJobStore(db());
  ASSERT_TRUE(store.ok());
  EXPECT_EQ(*(*store)->NextJobId(), "j-000003");
  auto jobs = (*store)->LoadJobs();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ((*jobs)[0].id(), "j-000001");
  EXPECT_EQ((*jobs)[0].state(), tern::v1::JOB_STATE_RUNNING);
  EXPECT_EQ((*jobs)[0].round(), 1);
  EXPECT_EQ((*jobs)[0].spec().name(), "first");
  EXPECT_EQ((*jobs)[0].placement(0).worker(), "w1");
  auto events = (*store)->Events("j-000001");
  ASSERT_EQ(events->size(), 3u);
  EXPECT_EQ((*events)[2].message(), "event 3");
  EXPECT_TRUE((*store)->Events("j-000002")->empty());
  auto workers = (*store)->LoadWorkers();
  ASSERT_EQ(workers->size(), 1u);
  EXPECT_EQ((*workers)[0].slots(), 4);
}

TEST_F(JobStoreTest, MetricHistoryIsDownsampledKeepingEvalsAndTheStride) {
  auto store = OpenSqliteJobStore(db(), /*max_step_points=*/100);
  ASSERT_TRUE(store.ok());
  for (int step = 1; step <= 1000; ++step) {
    tern::v1::MetricPoint p;
    p.set_job_id("j-1");
    p.set_kind("step");
    p.set_step(step);
    (*p.mutable_values())["loss"] = 1000.0 / step;
    ASSERT_TRUE((*store)->AppendMetric(p).ok());
    if (step % 250 == 0) {
      p.set_kind("eval");
      ASSERT_TRUE((*store)->AppendMetric(p).ok());
    }
  }
  auto points = (*store)->Metrics("j-1");
  ASSERT_TRUE(points.ok());
  int steps = 0, evals = 0;
  int64_t last = 0;
  for (const auto& p : *points) {
    if (p.kind() == "eval") {
      ++evals;
      continue;
    }
    ++steps;
    EXPECT_GT(p.step(), last);
    EXPECT_EQ(p.step() % 16, 0) << "1000 points into 100 slots: stride 16";
    last = p.step();
  }
  EXPECT_EQ(evals, 4);
  EXPECT_LE(steps, 100);
  EXPECT_GE(steps, 50);
  EXPECT_EQ(last, 992);
  // The stride persists: a reopened store keeps downsampling the same way.
  store->reset();
  auto again = OpenSqliteJobStore(db(), 100);
  tern::v1::MetricPoint p;
  p.set_job_id("j-1");
  p.set_kind("step");
  p.set_step(1001);
  ASSERT_TRUE((*again)->AppendMetric(p).ok());
  p.set_step(1008);
  ASSERT_TRUE((*again)->AppendMetric(p).ok());
  auto after = (*again)->Metrics("j-1");
  EXPECT_EQ(after->back().step(), 1008);
  EXPECT_EQ(after->size(), points->size() + 1);
}

TEST_F(JobStoreTest, UnwritableDirIsAClearError) {
  auto store = OpenSqliteJobStore("/proc/no/such/dir/ternd.db");
  ASSERT_FALSE(store.ok());
  EXPECT_NE(std::string(store.status().message()).find("/proc/no/such/dir/ternd.db"),
            std::string::npos);
}

}  // namespace
}  // namespace tern::daemon
