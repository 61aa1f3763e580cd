#include "daemon/state/scheduler.h"

#include <gtest/gtest.h>

namespace tern::daemon {
namespace {

// A worker with `free` of `total` slots free.
FreeSlots W(const std::string& name, int free, int total = -1) {
  return {.worker = name, .free = free, .total = total < 0 ? free : total};
}
PendingJob J(const std::string& id, int nodes, int rpn) {
  return {.id = id, .nodes = nodes, .ranks_per_node = rpn};
}

TEST(FifoGangScheduler, PlacesAGangOnDistinctWorkersWithEnoughSlots) {
  auto s = NewFifoGangScheduler();
  auto out = s->Schedule({J("j1", 2, 2)}, {W("a", 1), W("b", 2), W("c", 4)});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].job_id, "j1");
  EXPECT_EQ(out[0].workers, (std::vector<std::string>{"b", "c"}));  // "a" has 1 free slot
}

TEST(FifoGangScheduler, WaitsUntilTheWholeGangFits) {
  auto s = NewFifoGangScheduler();
  EXPECT_TRUE(s->Schedule({J("j1", 3, 1)}, {W("a", 8), W("b", 8)}).empty());
  EXPECT_TRUE(s->Schedule({J("j1", 1, 3)}, {W("a", 2), W("b", 2)}).empty());
}

TEST(FifoGangScheduler, AJobThatCanNeverFitDoesNotBlockYoungerJobs) {
  auto s = NewFifoGangScheduler();
  // j1 needs 2 nodes, only 1 exists; j2 needs 8 slots on a 4-slot worker: j3 still runs.
  auto out = s->Schedule({J("j1", 2, 1), J("j2", 1, 8), J("j3", 1, 1)}, {W("a", 4)});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].job_id, "j3");
}

TEST(FifoGangScheduler, BackfillsAroundTheReservationOfTheOldestWaitingJob) {
  auto s = NewFifoGangScheduler();
  // j1 needs 2 slots on 2 nodes; a and b each offer 2 but have 1 free (busy): j1 reserves
  // a and b. j2 (1 slot) may not take them, but runs on c; j3 finds nothing left.
  auto out = s->Schedule({J("j1", 2, 2), J("j2", 1, 1), J("j3", 1, 1)},
                         {W("a", 1, 2), W("b", 1, 2), W("c", 1, 1)});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].job_id, "j2");
  EXPECT_EQ(out[0].workers, (std::vector<std::string>{"c"}));
}

TEST(FifoGangScheduler, StartsSeveralJobsInOrderWhileSlotsLast) {
  auto s = NewFifoGangScheduler();
  auto out = s->Schedule({J("j1", 1, 2), J("j2", 2, 1), J("j3", 1, 2), J("j4", 1, 1)},
                         {W("a", 2), W("b", 3)});
  // j1 best-fits on a (2 free); j2 needs 2 nodes but only b has free slots left: it reserves
  // b (and a, once free); j3 and j4 may not take them.
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].job_id, "j1");
  EXPECT_EQ(out[0].workers, (std::vector<std::string>{"a"}));
  out = s->Schedule({J("j2", 2, 1), J("j3", 1, 2)}, {W("a", 2), W("b", 3), W("c", 1)});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].job_id, "j2");
  EXPECT_EQ(out[0].workers, (std::vector<std::string>{"a", "c"}));  // best fit: c(1), a(2)
  EXPECT_EQ(out[1].job_id, "j3");
  EXPECT_EQ(out[1].workers, (std::vector<std::string>{"b"}));
}

TEST(PendingMessage, NamesTheAskAndWhatTheClusterHas) {
  EXPECT_EQ(PendingMessage(J("j", 3, 2), {W("a", 2), W("b", 1, 2)}),
            "waiting for 3 nodes x 2 slots; cluster has 2 live workers with 2, 1 free slots (of "
            "2, 2); it cannot start until workers with 2 slots join; younger jobs run meanwhile");
  EXPECT_EQ(PendingMessage(J("j", 1, 2), {W("a", 1, 2)}),
            "waiting for 1 node x 2 slots; cluster has 1 live worker with 1 free slots (of 2)");
  EXPECT_EQ(PendingMessage(J("j", 1, 1), {}),
            "waiting for 1 node x 1 slot; cluster has 0 live workers");
  EXPECT_FALSE(CouldEverFit(J("j", 1, 3), {W("a", 2)}));
  EXPECT_TRUE(CouldEverFit(J("j", 2, 2), {W("a", 0, 2), W("b", 2)}));
}

}  // namespace
}  // namespace tern::daemon
