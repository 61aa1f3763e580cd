// Every CUDA op against the CPU table on the same random inputs (kernels/cuda/op_check.h).
// Skips, with one line, where there is no GPU or driver.
#include "kernels/cuda/cuda_ops.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/op_check.h"

namespace tern::kernels::cuda {
namespace {

class CudaOpsTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    auto dev = CreateCudaDevice(0);
    if (!dev.ok()) {
      skip_ = new std::string(dev.status().ToString());
      return;
    }
    device_ = dev->release();
    auto ops = CreateCudaOps();
    if (!ops.ok()) {
      skip_ = new std::string(ops.status().ToString());
      return;
    }
    ops_ = ops->release();
  }
  void SetUp() override {
    if (skip_ != nullptr) GTEST_SKIP() << "no GPU: " << *skip_;
  }
  static std::string* skip_;
  static Device* device_;
  static Ops<float>* ops_;
};
std::string* CudaOpsTest::skip_ = nullptr;
Device* CudaOpsTest::device_ = nullptr;
Ops<float>* CudaOpsTest::ops_ = nullptr;

TEST_P(CudaOpsTest, MatchesCpu) {
  const OpCheckResult r =
      RunOpCheck(GetParam(), *ops_, CpuOps<float>(), CudaQuantizeOps(), CpuQuantizeOps());
  EXPECT_TRUE(r.ok) << r.name << ": " << r.detail;
  RecordProperty("max_err", std::to_string(r.max_err));
}

INSTANTIATE_TEST_SUITE_P(AllOps, CudaOpsTest, ::testing::ValuesIn(OpCheckNames()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace tern::kernels::cuda
