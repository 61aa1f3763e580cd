// The CUDA backend's operation tables (kernels/backend.h): fp32 on the GPU. Pointers are device
// memory (a CudaDevice's kDevice tier, or any cudaMalloc'd memory); token, position and target
// arrays too. Kernels run on the legacy default stream, so they are ordered with cudaMemcpy /
// cudaMemset (CudaDevice::Copy / Fill) and with the blocking streams CudaDevice::NewStream
// creates. Ops that return a value (crossentropy_softmax_forward's count, sum_squares) wait for
// the GPU. A failing CUDA call inside an op is a bug or a lost device: it aborts with the call,
// file and line.
//
// This header and the .cu files behind it need only the CUDA toolkit (no abseil), so the
// standalone checker (kernels/cuda/standalone) builds them on a machine without Tern's Debian
// dependencies; cuda_device.h holds the Status-returning factories.
#pragma once

#include <memory>
#include <string>

#include "kernels/backend.h"

namespace tern::kernels::cuda {

// A new fp32 table on the current CUDA device (it owns a cuBLAS handle). nullptr, with the
// reason in *error, when cuBLAS cannot be initialised (no device, no driver).
std::unique_ptr<Ops<float>> NewCudaOps(std::string* error);

// The block quantizers on the GPU: the byte formats of kernels/cpu/quantize.h (bit-identical:
// same scales, round half to even, same nibble packing), so buffers quantized on one backend
// dequantize on the other. dequant_sum_requant_int4's q_in and s_in are host arrays of m device
// pointers.
const QuantizeOps& CudaQuantizeOps();

}  // namespace tern::kernels::cuda
