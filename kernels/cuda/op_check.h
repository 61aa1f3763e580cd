// Checks of a GPU operation table against a reference table (the CPU's) on the same random
// inputs: each check runs one operation on both (host buffers for the reference, device copies
// for the GPU table) and compares every output. Shared by the gpu tests
// (tests/kernels/cuda) and the standalone checker (kernels/cuda/standalone), so it needs only
// the CUDA runtime (no abseil, no gtest).
#pragma once

#include <string>
#include <vector>

#include "kernels/backend.h"

namespace tern::kernels::cuda {

struct OpCheckResult {
  std::string name;
  bool ok = true;
  double max_err = 0;  // largest |gpu - ref| / max(1, max |ref|) over the outputs
  double tol = 0;
  std::string detail;  // the worst output, or what did not match
};

// Every check's name, in table order (one or more per operation).
std::vector<std::string> OpCheckNames();

// Runs check `name`. The GPU tables' pointers are device memory on the current device.
OpCheckResult RunOpCheck(const std::string& name, const Ops<float>& gpu, const Ops<float>& ref,
                         const QuantizeOps& gpu_q, const QuantizeOps& ref_q);

}  // namespace tern::kernels::cuda
