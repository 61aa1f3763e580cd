// The CPU backend's operation table (kernels/backend.h), forwarding to kernels/cpu.
#pragma once

#include "kernels/backend.h"

namespace tern::kernels {

template <typename T>
const Ops<T>& CpuOps();
const QuantizeOps& CpuQuantizeOps();

}  // namespace tern::kernels
