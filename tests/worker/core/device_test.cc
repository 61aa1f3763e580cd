#include "worker/core/device.h"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

namespace tern {
namespace {

TEST(DeviceTest, BudgetRefusesTheAllocationByNameAndKeepsWhatWasAllocated) {
  CpuDevice dev;
  dev.set_budget(MemoryTier::kDevice, 1000);
  auto a = Buffer<float>::Create(dev, 200, MemoryTier::kDevice, "first");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(dev.usage(MemoryTier::kDevice).current, 800u);
  auto b = Buffer<float>::Create(dev, 51, MemoryTier::kDevice, "layer 3 qkv");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(b.status().message().find("layer 3 qkv"), std::string::npos) << b.status();
  EXPECT_NE(b.status().message().find("resources.device_memory_budget"), std::string::npos);
  // The refused allocation took nothing; the first buffer is intact and usable.
  EXPECT_EQ(dev.usage(MemoryTier::kDevice).current, 800u);
  for (size_t i = 0; i < a->size(); ++i) (*a)[i] = float(i);
  EXPECT_EQ((*a)[199], 199.0f);
  // Exactly the rest fits.
  auto c = Buffer<float>::Create(dev, 50, MemoryTier::kDevice, "rest");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(dev.usage(MemoryTier::kDevice).current, 1000u);
}

TEST(DeviceTest, TiersAreAccountedSeparatelyWithPeaks) {
  CpuDevice dev;
  dev.set_budget(MemoryTier::kDevice, 400);
  {
    auto d = Buffer<double>::Create(dev, 50, MemoryTier::kDevice, "d");
    ASSERT_TRUE(d.ok());
    // The host tier is outside the device budget.
    auto h = Buffer<double>::Create(dev, 1000, MemoryTier::kHost, "offloaded chunk");
    ASSERT_TRUE(h.ok()) << h.status();
    EXPECT_EQ(dev.usage(MemoryTier::kHost).current, 8000u);
    EXPECT_EQ(h->tier(), MemoryTier::kHost);
    Buffer<double> moved = std::move(*d);
    EXPECT_EQ(dev.usage(MemoryTier::kDevice).current, 400u);
  }
  EXPECT_EQ(dev.usage(MemoryTier::kDevice).current, 0u);
  EXPECT_EQ(dev.usage(MemoryTier::kDevice).peak, 400u);
  EXPECT_EQ(dev.usage(MemoryTier::kHost).peak, 8000u);
  dev.ResetPeak();
  EXPECT_EQ(dev.usage(MemoryTier::kHost).peak, 0u);
  dev.set_budget(MemoryTier::kHost, 16);
  auto h = Buffer<double>::Create(dev, 3, MemoryTier::kHost, "spill");
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.status().message().find("resources.host_memory_budget"), std::string::npos);
}

TEST(DeviceTest, ChargesCountAgainstTheBudgetUntilReleased) {
  CpuDevice dev;
  dev.set_budget(MemoryTier::kDevice, 100);
  auto c = Charge::Make(dev, 60, MemoryTier::kDevice, "training state");
  ASSERT_TRUE(c.ok());
  auto b = Buffer<uint8_t>::Create(dev, 41, MemoryTier::kDevice, "activations");
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(Charge::Make(dev, 41, MemoryTier::kDevice, "more").ok());
  c->reset();
  EXPECT_TRUE(Buffer<uint8_t>::Create(dev, 100, MemoryTier::kDevice, "activations").ok());
}

TEST(DeviceTest, StreamRunsWorkInOrderAndWaitsForMarkers) {
  CpuDevice dev;
  auto s = dev.NewStream();
  std::vector<int> src(1 << 16), dst(1 << 16, 0);
  for (size_t i = 0; i < src.size(); ++i) src[i] = int(i);
  std::atomic<int> order{0};
  int copy_seen = -1;
  s->CopyAsync(dst.data(), src.data(), src.size() * sizeof(int));
  s->Enqueue([&] {
    copy_seen = dst.back();
    order = 1;
  });
  const uint64_t m = s->Record();
  s->Wait(m);
  EXPECT_EQ(order.load(), 1);
  EXPECT_EQ(copy_seen, (1 << 16) - 1);
  EXPECT_EQ(dst, src);
  dev.Fill(dst.data(), 0, dst.size() * sizeof(int));
  EXPECT_EQ(dst[5], 0);
  s->Synchronize();  // nothing pending: returns
}

// Waiters may run pending work themselves; work still runs one item at a time and in order.
TEST(DeviceTest, StreamWorkStaysInOrderWhenWaitersHelp) {
  CpuDevice dev;
  auto s = dev.NewStream();
  std::vector<int> seen;
  std::atomic<int> concurrent{0};
  bool overlapped = false;
  for (int i = 0; i < 2000; ++i) {
    s->Enqueue([&, i] {
      if (concurrent.fetch_add(1) != 0) overlapped = true;
      seen.push_back(i);
      concurrent.fetch_sub(1);
    });
    if (i % 7 == 0) s->Wait(s->Record());
  }
  s->Synchronize();
  EXPECT_FALSE(overlapped);
  ASSERT_EQ(seen.size(), 2000u);
  for (int i = 0; i < 2000; ++i) ASSERT_EQ(seen[size_t(i)], i);
}

}  // namespace
}  // namespace tern
