// The MFU denominator: given, or measured once per host and thread count and then cached.
#include "worker/engine/sgemm_peak.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

namespace tern::engine {
namespace {

class SgemmPeakTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("tern-peak-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    ::setenv("XDG_CACHE_HOME", dir_.c_str(), 1);
    ::unsetenv("TERN_PEAK_GFLOPS");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(SgemmPeakTest, MeasuredOnceThenCachedPerHostAndThreads) {
  EXPECT_EQ(PeakCachePath(), (dir_ / "tern" / "sgemm_peak.json").string());
  const SgemmPeak first = ResolveSgemmPeak(1, 0);
  EXPECT_EQ(first.source, "measured");
  EXPECT_GT(first.gflops, 0);
  EXPECT_EQ(first.cache, PeakCachePath());
  const SgemmPeak second = ResolveSgemmPeak(1, 0);
  EXPECT_EQ(second.source, "cached");
  EXPECT_EQ(second.gflops, first.gflops);
  EXPECT_EQ(second.cache, PeakCachePath());
  // Another thread count is another key.
  EXPECT_EQ(ReadCachedPeak(PeakCachePath(), PeakCacheKey(7)).status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(WriteCachedPeak(PeakCachePath(), PeakCacheKey(7), 123.5).ok());
  EXPECT_EQ(*ReadCachedPeak(PeakCachePath(), PeakCacheKey(7)), 123.5);
  EXPECT_EQ(*ReadCachedPeak(PeakCachePath(), PeakCacheKey(1)), first.gflops) << "kept";
}

TEST_F(SgemmPeakTest, FlagThenEnvironmentWinWithoutMeasuring) {
  ::setenv("TERN_PEAK_GFLOPS", "80", 1);
  const SgemmPeak flag = ResolveSgemmPeak(1, 250);
  EXPECT_EQ(flag.source, "flag");
  EXPECT_EQ(flag.gflops, 250);
  const SgemmPeak env = ResolveSgemmPeak(1, 0);
  EXPECT_EQ(env.source, "env");
  EXPECT_EQ(env.gflops, 80);
  EXPECT_FALSE(std::filesystem::exists(PeakCachePath())) << "nothing measured, nothing cached";
}

TEST_F(SgemmPeakTest, CorruptCacheIsMeasuredAgain) {
  std::filesystem::create_directories(dir_ / "tern");
  std::ofstream(PeakCachePath()) << "{not json";
  const SgemmPeak p = ResolveSgemmPeak(1, 0);
  EXPECT_EQ(p.source, "measured");
  EXPECT_EQ(ResolveSgemmPeak(1, 0).source, "cached");
}

}  // namespace
}  // namespace tern::engine
