// CudaDevice: budgets and peak accounting as on the CPU device, the caching allocator, copies,
// fills and streams. Skips, with one line, where there is no GPU or driver.
#include "kernels/cuda/cuda_device.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <numeric>
#include <vector>

namespace tern {
namespace {

class CudaDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dev = CreateCudaDevice(0);
    if (!dev.ok()) GTEST_SKIP() << "no GPU: " << dev.status().ToString();
    dev_ = std::move(*dev);
  }
  std::unique_ptr<Device> dev_;
};

TEST(CudaDeviceFactoryTest, UnavailableOrUsable) {
  auto dev = CreateCudaDevice(0);
  if (!dev.ok()) {
    EXPECT_EQ(dev.status().code(), absl::StatusCode::kUnavailable) << dev.status();
    GTEST_SKIP() << "no GPU: " << dev.status().ToString();
  }
  EXPECT_NE((*dev)->name().find("cuda:0"), std::string_view::npos);
  EXPECT_EQ(CreateCudaDevice(1 << 20).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(CudaDeviceTest, BudgetRefusesAndPeakCountsRequestedBytes) {
  dev_->set_budget(MemoryTier::kDevice, 1000);
  auto a = Buffer<float>::Create(*dev_, 200, MemoryTier::kDevice, "a");  // 800 bytes
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = Buffer<float>::Create(*dev_, 51, MemoryTier::kDevice, "activations");  // 204 more
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(b.status().message().find("activations"), std::string_view::npos) << b.status();
  auto c = Buffer<float>::Create(*dev_, 50, MemoryTier::kDevice, "c");  // exactly the budget
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(dev_->usage(MemoryTier::kDevice).current, 1000u);
  EXPECT_EQ(dev_->usage(MemoryTier::kDevice).peak, 1000u);
  a->reset();
  c->reset();
  EXPECT_EQ(dev_->usage(MemoryTier::kDevice).current, 0u);
  EXPECT_EQ(dev_->usage(MemoryTier::kDevice).peak, 1000u);
}

TEST_F(CudaDeviceTest, CachingAllocatorReusesFreedBlocks) {
  auto* cuda = static_cast<CudaDevice*>(dev_.get());
  void* first = nullptr;
  {
    auto a = Buffer<float>::Create(*dev_, 3 << 20, MemoryTier::kDevice, "a");
    ASSERT_TRUE(a.ok());
    first = a->data();
  }
  EXPECT_GT(cuda->cached_bytes(), 0u);
  auto b = Buffer<float>::Create(*dev_, (3 << 20) - 5, MemoryTier::kDevice, "b");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->data(), first);  // same rounded size: the cached block
  EXPECT_EQ(cuda->cached_bytes(), 0u);
  EXPECT_EQ(dev_->usage(MemoryTier::kDevice).current, b->bytes());
  b->reset();
  cuda->EmptyCache();
  EXPECT_EQ(cuda->cached_bytes(), 0u);
}

TEST_F(CudaDeviceTest, CopyFillRoundTripThroughBothTiers) {
  const size_t n = 1 << 16;
  auto host = Buffer<uint32_t>::Create(*dev_, n, MemoryTier::kHost, "pinned");
  auto devb = Buffer<uint32_t>::Create(*dev_, n, MemoryTier::kDevice, "dev");
  ASSERT_TRUE(host.ok() && devb.ok());
  std::iota(host->begin(), host->end(), 7u);  // pinned memory is host-addressable
  dev_->Copy(devb->data(), host->data(), host->bytes());
  std::vector<uint32_t> back(n);
  dev_->Copy(back.data(), devb->data(), devb->bytes());
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(back[i], i + 7) << i;
  dev_->Fill(devb->data(), 0xAB, devb->bytes());
  dev_->Copy(back.data(), devb->data(), devb->bytes());
  EXPECT_EQ(back[123], 0xABABABABu);
  dev_->Fill(host->data(), 0, host->bytes());
  EXPECT_EQ((*host)[5], 0u);
}

TEST_F(CudaDeviceTest, StreamCopiesAndCallbacksRunInOrder) {
  const size_t n = 1 << 20;
  auto src = Buffer<float>::Create(*dev_, n, MemoryTier::kHost, "src");
  auto mid = Buffer<float>::Create(*dev_, n, MemoryTier::kDevice, "mid");
  auto dst = Buffer<float>::Create(*dev_, n, MemoryTier::kHost, "dst");
  ASSERT_TRUE(src.ok() && mid.ok() && dst.ok());
  for (size_t i = 0; i < n; ++i) (*src)[i] = float(i);
  auto stream = dev_->NewStream();
  std::atomic<int> seen{-1};
  stream->CopyAsync(mid->data(), src->data(), src->bytes());
  stream->CopyAsync(dst->data(), mid->data(), mid->bytes());
  float* d = dst->data();
  stream->Enqueue([&seen, d] { seen = d[n - 1] == float(n - 1) ? 1 : 0; });
  const uint64_t marker = stream->Record();
  stream->Wait(marker);
  EXPECT_EQ(seen.load(), 1);  // the callback ran after both copies
  EXPECT_EQ((*dst)[12345], 12345.0f);
  stream->Wait(marker);  // waiting again returns at once
  stream->Synchronize();
}

}  // namespace
}  // namespace tern
