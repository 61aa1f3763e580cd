#include "worker/core/duration.h"

#include <gtest/gtest.h>

namespace tern {
namespace {

TEST(DurationTest, ParsesUnits) {
  EXPECT_EQ(*ParseDurationMs("5s"), 5000);
  EXPECT_EQ(*ParseDurationMs("500ms"), 500);
  EXPECT_EQ(*ParseDurationMs("2m"), 120000);
  EXPECT_EQ(*ParseDurationMs("1.5"), 1500);
  EXPECT_FALSE(ParseDurationMs("5h").ok());
  EXPECT_FALSE(ParseDurationMs("-1s").ok());
}

TEST(DurationTest, FormatRoundTrips) {
  for (int64_t ms : {0, 500, 1000, 2000, 15000, 1234}) {
    EXPECT_EQ(*ParseDurationMs(FormatDurationMs(ms)), ms) << ms;
  }
  EXPECT_EQ(FormatDurationMs(15000), "15s");
  EXPECT_EQ(FormatDurationMs(250), "250ms");
}

}  // namespace
}  // namespace tern
