// Stage-then-persist: Save returns once staged (the caller may overwrite its buffers), the
// persisted file holds the staged values, a second Save waits for the first, errors surface.
#include "worker/checkpoint/async_checkpointer.h"

#include <cstring>

#include "gtest/gtest.h"
#include "tests/worker/checkpoint/test_util.h"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/manifest.h"

namespace tern::ckpt {
namespace {

using testing::TempDir;

ParamTable Table() {
  ParamTable t;
  t.Add("w1", {1024, 1000}, true, 0);
  t.Add("b1", {1000}, false, 0);
  t.Add("w2", {777, 1001}, true, 1);  // ~1.78 M floats, ~7 MiB per state
  return t;
}

// Two ranks as two checkpointers; returns after committing `step`.
void SaveStep(AsyncCheckpointer* r0, AsyncCheckpointer* r1, const std::string& root, int64_t step,
              std::vector<float>* master, std::vector<float>* exp_avg) {
  const ParamTable t = Table();
  const uint64_t cut = 500001;
  std::vector<Segment> s0 = {{"master", 0, cut, "f32", master->data()},
                             {"exp_avg", 0, cut, "f32", exp_avg->data()}};
  std::vector<Segment> s1 = {{"master", cut, t.total() - cut, "f32", master->data() + cut},
                             {"exp_avg", cut, t.total() - cut, "f32", exp_avg->data() + cut}};
  ASSERT_TRUE(r0->Save(root, step, 0, s0, t).ok());
  ASSERT_TRUE(r1->Save(root, step, 1, s1, t).ok());
  // The trainer resumes and mutates its buffers while the files are written.
  std::vector<float> saved_master = *master;
  std::vector<float> saved_exp = *exp_avg;
  for (auto& v : *master) v = -1;
  for (auto& v : *exp_avg) v = -2;
  auto a = r0->Wait();
  auto b = r1->Wait();
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->io_path, "io_uring+O_DIRECT");
  CommitOptions co;
  co.extra = {{"step_note", step}};
  ASSERT_TRUE(CommitManifest(root, step, {*a, *b}, t, co).ok());
  auto c = Checkpoint::Open(root);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->step(), step);
  std::vector<float> back(t.total());
  ASSERT_TRUE((*c)->ReadState("master", 0, t.total(), back.data()).ok());
  EXPECT_EQ(back, saved_master);
  ASSERT_TRUE((*c)->ReadState("exp_avg", 0, t.total(), back.data()).ok());
  EXPECT_EQ(back, saved_exp);
  *master = saved_master;
  *exp_avg = saved_exp;
}

TEST(CkptAsyncTest, StageThenPersistAcrossSteps) {
  TempDir dir;
  const ParamTable t = Table();
  std::vector<float> master(t.total()), exp_avg(t.total());
  for (uint64_t i = 0; i < t.total(); ++i) {
    master[i] = static_cast<float>(i);
    exp_avg[i] = static_cast<float>(i) * 0.25f;
  }
  AsyncCheckpointer r0, r1;
  SaveStep(&r0, &r1, dir.path(), 10, &master, &exp_avg);
  const uint64_t cap = r0.staging_capacity();
  for (auto& v : master) v += 1;
  SaveStep(&r0, &r1, dir.path(), 20, &master, &exp_avg);
  EXPECT_EQ(r0.staging_capacity(), cap);  // staging reused, not reallocated
  EXPECT_GT(r0.last_stage_seconds(), 0.0);
}

TEST(CkptAsyncTest, SecondSaveWaitsForFirstAndBlockingMode) {
  TempDir dir;
  const ParamTable t = Table();
  std::vector<float> v(t.total(), 3.5f);
  AsyncCheckpointer ck;
  std::vector<Segment> seg = {{"weights", 0, t.total(), "f32", v.data()}};
  ASSERT_TRUE(ck.Save(dir.path(), 1, 0, seg, t).ok());
  v.assign(v.size(), 4.5f);
  ASSERT_TRUE(ck.Save(dir.path(), 2, 0, seg, t).ok());  // joins the first persist
  auto r2 = ck.Wait();
  ASSERT_TRUE(r2.ok()) << r2.status();
  ASSERT_TRUE(CommitManifest(dir.path(), 2, {*r2}, t).ok());
  EXPECT_EQ(ck.Wait().status().code(), absl::StatusCode::kFailedPrecondition);
  auto c = Checkpoint::Open(dir.path());
  ASSERT_TRUE(c.ok());
  float x;
  ASSERT_TRUE((*c)->ReadState("weights", 12345, 1, &x).ok());
  EXPECT_EQ(x, 4.5f);
  // Step 1's file was fully written too (never committed, so it is incomplete).
  auto list = ListCheckpoints(dir.path());
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].bytes, t.total() * 4);

  AsyncOptions bo;
  bo.blocking = true;
  AsyncCheckpointer blocking(bo);
  ASSERT_TRUE(blocking.Save(dir.path(), 3, 0, seg, t).ok());
  EXPECT_TRUE(blocking.pending());
  auto r3 = blocking.Wait();
  ASSERT_TRUE(r3.ok());
  EXPECT_EQ(r3->size, t.total() * 4);
}

TEST(CkptAsyncTest, PersistErrorIsReported) {
  TempDir dir;
  const ParamTable t = Table();
  std::vector<float> v(t.total(), 1.0f);
  std::vector<Segment> seg = {{"weights", 0, t.total(), "f32", v.data()}};
  const std::string bad_root = dir.path() + "/file_not_dir";
  std::FILE* f = std::fopen(bad_root.c_str(), "w");
  ASSERT_TRUE(f != nullptr);
  std::fclose(f);
  AsyncCheckpointer ck;
  ASSERT_TRUE(ck.Save(bad_root, 1, 0, seg, t).ok());  // staging succeeds
  absl::Status next = ck.Save(dir.path(), 2, 0, seg, t);
  EXPECT_FALSE(next.ok());
  EXPECT_NE(std::string(next.message()).find("previous checkpoint failed"), std::string::npos);
  EXPECT_NE(std::string(next.message()).find("file_not_dir"), std::string::npos) << next;
  ASSERT_TRUE(ck.Save(dir.path(), 2, 0, seg, t).ok());
  EXPECT_TRUE(ck.Wait().ok());
}

}  // namespace
}  // namespace tern::ckpt
