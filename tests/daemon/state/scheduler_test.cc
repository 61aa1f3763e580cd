#include "daemon/state/scheduler.h"

#include <gtest/gtest.h>

namespace tern::daemon {
namespace {

TEST(FifoGangScheduler, PlacesAGangOnDistinctWorkersWithEnoughSlots) {
  auto s = NewFifoGangScheduler();
  auto out = s->Schedule({{"j1", 2, 2}}, {{"a", 1}, {"b", 2}, {"c", 4}});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].job_id, "j1");
  EXPECT_EQ(out[0].workers, (std::vector<std::string>{"b", "c"}));  // "a" has 1 free slot
}

TEST(FifoGangScheduler, WaitsUntilTheWholeGangFits) {
  auto s = NewFifoGangScheduler();
  EXPECT_TRUE(s->Schedule({{"j1", 3, 1}}, {{"a", 8}, {"b", 8}}).empty());
  EXPECT_TRUE(s->Schedule({{"j1", 1, 3}}, {{"a", 2}, {"b", 2}}).empty());
}

TEST(FifoGangScheduler, FifoHeadOfLineBlocksYoungerJobs) {
  auto s = NewFifoGangScheduler();
  // j1 needs 2 nodes, only 1 exists: j2 (which would fit) must wait behind it.
  EXPECT_TRUE(s->Schedule({{"j1", 2, 1}, {"j2", 1, 1}}, {{"a", 4}}).empty());
}

TEST(FifoGangScheduler, StartsSeveralJobsInOrderWhileSlotsLast) {
  auto s = NewFifoGangScheduler();
  auto out =
      s->Schedule({{"j1", 1, 2}, {"j2", 2, 1}, {"j3", 1, 2}, {"j4", 1, 1}}, {{"a", 2}, {"b", 3}});
  // j1 best-fits on a (2 free); j2 takes 1 on... only b has free slots left -> waits,
  // and FIFO stops there.
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].job_id, "j1");
  EXPECT_EQ(out[0].workers, (std::vector<std::string>{"a"}));
  out = s->Schedule({{"j2", 2, 1}, {"j3", 1, 2}}, {{"a", 2}, {"b", 3}, {"c", 1}});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].job_id, "j2");
  EXPECT_EQ(out[0].workers, (std::vector<std::string>{"a", "c"}));  // best fit: c(1), a(2)
  EXPECT_EQ(out[1].job_id, "j3");
  EXPECT_EQ(out[1].workers, (std::vector<std::string>{"b"}));
}

}  // namespace
}  // namespace tern::daemon
