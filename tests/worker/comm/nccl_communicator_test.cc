// NcclCommunicator on device buffers: one rank on one GPU (every collective), two ranks as
// threads on two GPUs, and a peer that never joins (DEADLINE_EXCEEDED, then broken). Skips with
// one line where there is no GPU (or too few).
#include "worker/comm/nccl_communicator.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <thread>
#include <vector>

#include "worker/comm/in_memory_store.h"

namespace tern::comm {
namespace {

using namespace std::chrono_literals;

int GpuCount(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    *why = cudaGetErrorString(e);
    return 0;
  }
  if (n == 0) *why = "the driver reports no device";
  return n;
}

// A device copy of v, and back.
template <typename T>
T* ToDevice(const std::vector<T>& v) {
  T* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, v.size() * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return p;
}
template <typename T>
std::vector<T> ToHost(const T* p, size_t n) {
  std::vector<T> v(n);
  EXPECT_EQ(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

NcclOptions Options(int device, std::chrono::milliseconds timeout = 20s) {
  NcclOptions o;
  o.device = device;
  o.timeout = timeout;
  return o;
}

TEST(NcclCommunicatorTest, OneRankRunsEveryCollective) {
  std::string why;
  if (GpuCount(&why) < 1) GTEST_SKIP() << "no GPU: " << why;
  InMemoryStore store;
  auto comm = NcclCommunicator::Create(store, "g", 0, 1, Options(0));
  ASSERT_TRUE(comm.ok()) << comm.status();
  const CollectiveOptions opts{.timeout = 10s};
  std::vector<float> x = {1, 2, 3, 4};
  float* d = ToDevice(x);
  ASSERT_TRUE((*comm)->AllReduce(std::span<float>(d, 4), opts).ok());
  EXPECT_EQ(ToHost(d, 4), x);
  float* out = ToDevice(std::vector<float>(4, 0));
  ASSERT_TRUE(
      (*comm)->ReduceScatter(std::span<const float>(d, 4), std::span<float>(out, 4), opts).ok());
  EXPECT_EQ(ToHost(out, 4), x);
  auto bytes_in = std::as_bytes(std::span<const float>(d, 4));
  auto bytes_out = std::as_writable_bytes(std::span<float>(out, 4));
  ASSERT_TRUE((*comm)->AllGather(bytes_in, bytes_out, opts).ok());
  ASSERT_TRUE((*comm)->AllToAll(bytes_in, bytes_out, opts).ok());
  const std::vector<size_t> split = {16};
  ASSERT_TRUE((*comm)->AllToAllV(bytes_in, split, bytes_out, split, opts).ok());
  ASSERT_TRUE((*comm)->Broadcast(std::as_writable_bytes(std::span<float>(d, 4)), 0, opts).ok());
  ASSERT_TRUE((*comm)->Barrier(opts).ok());
  EXPECT_EQ(ToHost(out, 4), x);
  EXPECT_EQ((*comm)->stats().total_calls(), 7u);
  cudaFree(d);
  cudaFree(out);
}

TEST(NcclCommunicatorTest, TwoRanksAllReduceAndAllGather) {
  std::string why;
  if (GpuCount(&why) < 2) GTEST_SKIP() << "needs 2 GPUs: " << (why.empty() ? "fewer found" : why);
  InMemoryStore store;
  std::vector<std::vector<float>> sums(2), gathered(2);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      ASSERT_EQ(cudaSetDevice(r), cudaSuccess);
      auto comm = NcclCommunicator::Create(store, "pair", r, 2, Options(r));
      ASSERT_TRUE(comm.ok()) << comm.status();
      const CollectiveOptions opts{.timeout = 20s};
      float* d = ToDevice(std::vector<float>{float(r + 1), float(10 * (r + 1))});
      ASSERT_TRUE((*comm)->AllReduce(std::span<float>(d, 2), opts).ok());
      sums[r] = ToHost(d, 2);
      float* g = ToDevice(std::vector<float>(4, 0));
      ASSERT_TRUE((*comm)
                      ->AllGather(std::as_bytes(std::span<const float>(d, 2)),
                                  std::as_writable_bytes(std::span<float>(g, 4)), opts)
                      .ok());
      gathered[r] = ToHost(g, 4);
      cudaFree(d);
      cudaFree(g);
    });
  }
  for (auto& t : ranks) t.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(sums[r], (std::vector<float>{3, 30})) << r;
    EXPECT_EQ(gathered[r], (std::vector<float>{3, 30, 3, 30})) << r;
  }
}

TEST(NcclCommunicatorTest, PeerThatNeverJoinsTimesOut) {
  std::string why;
  if (GpuCount(&why) < 1) GTEST_SKIP() << "no GPU: " << why;
  InMemoryStore store;
  // Rank 1 of 2 waits for rank 0's id, which never comes.
  auto comm = NcclCommunicator::Create(store, "lonely", 1, 2, Options(0, 300ms));
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded) << comm.status();
}

}  // namespace
}  // namespace tern::comm
