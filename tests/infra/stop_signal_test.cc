#include "infra/stop_signal.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

namespace tern::infra {
namespace {

// The test binary is single-threaded here, so the blocked SIGTERM stays pending for the wait.
TEST(StopSignalTest, WaitReturnsTheBlockedSignal) {
  BlockStopSignals();
  ASSERT_EQ(::kill(::getpid(), SIGTERM), 0);
  EXPECT_EQ(WaitForStopSignal(), SIGTERM);
  ASSERT_EQ(::kill(::getpid(), SIGINT), 0);
  EXPECT_EQ(WaitForStopSignal([] { return false; }, std::chrono::milliseconds(10)), SIGINT);
}

TEST(StopSignalTest, GivesUpWhenAsked) {
  BlockStopSignals();
  int polls = 0;
  EXPECT_EQ(WaitForStopSignal([&] { return ++polls == 3; }, std::chrono::milliseconds(5)), 0);
  EXPECT_EQ(polls, 3);
}

}  // namespace
}  // namespace tern::infra
