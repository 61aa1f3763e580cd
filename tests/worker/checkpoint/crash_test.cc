// Manifest commit atomicity: a child process saving step 200 is killed (SIGKILL) at each fault
// point; the previous checkpoint must still load, `latest` must still name it, and a partial
// step must not count as complete and be cleaned once a newer step commits.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "gtest/gtest.h"
#include "tests/worker/checkpoint/test_util.h"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/fs_util.h"
#include "worker/checkpoint/manifest.h"

namespace tern::ckpt {
namespace {

using testing::RankSegments;
using testing::SmallTable;
using testing::StateValues;
using testing::TempDir;

absl::Status Save(const std::string& root, int64_t step, float bump) {
  ParamTable t = SmallTable();
  std::vector<std::vector<float>> states;
  for (int i = 0; i < 3; ++i) {
    states.push_back(StateValues(i, t.total()));
    for (auto& v : states.back()) v += bump;
  }
  return SaveCheckpointLocal(root, step, RankSegments(states, {0, 777, 20000, t.total()}), t);
}

class CkptCrashTest : public ::testing::TestWithParam<const char*> {};

TEST_P(CkptCrashTest, PreviousCheckpointSurvives) {
  const std::string point = GetParam();
  TempDir dir;
  ASSERT_TRUE(Save(dir.path(), 100, 0).ok());
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    SetFaultPointForTesting(point);
    absl::Status st = Save(dir.path(), 200, 1);
    ::_exit(st.ok() ? 0 : 3);  // reaching here means the fault point was never hit
  }
  int wstatus = 0;
  ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(wstatus)) << "child exited normally with " << WEXITSTATUS(wstatus);
  EXPECT_EQ(WTERMSIG(wstatus), SIGKILL);

  auto latest = ReadSmallFile(dir.path() + "/latest");
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(*latest, "step-000100\n");
  auto c = Checkpoint::Open(dir.path(), "latest");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->step(), 100);
  ASSERT_TRUE((*c)->Verify().ok());
  float x;
  ASSERT_TRUE((*c)->ReadState("exp_avg", 12345, 1, &x).ok());
  EXPECT_EQ(x, 1000000.0f + 12345);

  const bool committed = point == "after_manifest_rename_before_latest";
  auto list = ListCheckpoints(dir.path());
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_TRUE((*list)[0].complete);
  EXPECT_EQ((*list)[1].name, "step-000200");
  EXPECT_EQ((*list)[1].complete, committed) << (*list)[1].problem;
  auto c200 = Checkpoint::Open(dir.path(), "step-000200");
  EXPECT_EQ(c200.ok(), committed) << c200.status();
  if (!committed) {
    EXPECT_EQ(c200.status().code(), absl::StatusCode::kNotFound);
    EXPECT_NE(std::string(c200.status().message()).find("step-000100 is complete"),
              std::string::npos);
  }
  // The partial step is newer than every complete one: it might be being written, so it stays.
  auto removed = CleanupIncomplete(dir.path());
  ASSERT_TRUE(removed.ok());
  EXPECT_TRUE(removed->empty());
  // Once a newer step commits, a partial step-000200 is older than it and is cleaned.
  ASSERT_TRUE(Save(dir.path(), 300, 2).ok());
  removed = CleanupIncomplete(dir.path());
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(removed->size(), committed ? 0u : 1u);
  EXPECT_EQ(std::filesystem::exists(dir.path() + "/step-000200"), committed);
  auto c300 = Checkpoint::Open(dir.path());
  ASSERT_TRUE(c300.ok());
  EXPECT_EQ((*c300)->step(), 300);
}

INSTANTIATE_TEST_SUITE_P(FaultPoints, CkptCrashTest,
                         ::testing::Values("after_shard_write", "before_manifest_rename",
                                           "after_manifest_rename_before_latest"));

TEST(CkptCrashEnvTest, EnvironmentVariableSelectsFaultPoint) {
  TempDir dir;
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::setenv("TERN_CKPT_FAULT", "before_manifest_rename", 1);
    absl::Status st = Save(dir.path(), 1, 0);
    ::_exit(st.ok() ? 0 : 3);
  }
  int wstatus = 0;
  ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(wstatus));
  EXPECT_TRUE(std::filesystem::exists(dir.path() + "/step-000001/manifest.json.tmp"));
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/step-000001/manifest.json"));
  EXPECT_EQ(Checkpoint::Open(dir.path()).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace tern::ckpt
