// kernels/cuda's kernels under the host emulation of CUDA (emu.h), every op against the CPU
// table on the same inputs (kernels/cuda/op_check.h): the kernels' logic is checked on every
// machine, with or without a GPU or nvcc. The gpu tests check the same on a real GPU.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/op_check.h"

namespace tern::kernels::cuda {
namespace {

class EmulatedCudaOpsTest : public ::testing::TestWithParam<std::string> {};

TEST_P(EmulatedCudaOpsTest, MatchesCpu) {
  std::string error;
  std::unique_ptr<Ops<float>> ops = NewCudaOps(&error);
  ASSERT_NE(ops, nullptr) << error;
  const OpCheckResult r =
      RunOpCheck(GetParam(), *ops, CpuOps<float>(), CudaQuantizeOps(), CpuQuantizeOps());
  EXPECT_TRUE(r.ok) << r.name << ": " << r.detail;
}

INSTANTIATE_TEST_SUITE_P(AllOps, EmulatedCudaOpsTest, ::testing::ValuesIn(OpCheckNames()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace tern::kernels::cuda
