// Weight-only quantization on the CPU (formats in kernels/wquant.h): the codecs, quantizing a
// matrix, dequantizing it, and the product with fp32 activations. The product dequantizes in
// registers: for a few rows of activations (decoding) each block of weights is expanded once
// and multiplied into every row (AVX-512: the FP6 codes become fp16 bit patterns through one
// byte shuffle and convert to fp32 in hardware); for many rows (prefill, perplexity) panels of
// the matrix are expanded to fp32 and multiplied by sgemm.
#pragma once

#include <cstdint>

#include "kernels/backend.h"
#include "kernels/wquant.h"

namespace tern::kernels {

// FP6 e3m2: code = sign << 5 | exponent << 2 | mantissa. Rounds to the nearest value, ties to
// the even mantissa; magnitudes past 28 saturate to 28; NaN becomes 0.
uint8_t FloatToFp6(float v);
float Fp6ToFloat(uint8_t code);

// A matrix of the format and shape with its planes and scales allocated (codes 0, scales 1):
// what a reader fills.
QuantizedMatrix AllocateQuantized(WeightFormat format, int rows, int cols);

// Quantizes W: (rows, cols) for kOutIn, (cols, rows) for kInOut (GPT-2's Conv1D), so row r is
// always output channel r.
QuantizedMatrix QuantizeWeights(WeightFormat format, const float* w, int rows, int cols,
                                WeightLayout layout = WeightLayout::kOutIn);

// Rows [r0, r1) of the matrix as fp32, (r1 - r0, cols) row-major: the values the product uses.
void DequantizeRows(const QuantizedMatrix& q, int r0, int r1, float* out);

// out (N, q.rows) = inp (N, q.cols) @ W^T (+ bias); assigns. Vectorized for the host CPU.
void qlinear_forward(float* out, const float* inp, const QuantizedMatrix& q, const float* bias,
                     int N);
// The same product through plain C++ loops (no intrinsics): the path for CPUs without AVX-512,
// kept callable so the tests check it on every machine.
void qlinear_forward_portable(float* out, const float* inp, const QuantizedMatrix& q,
                              const float* bias, int N);

// The CPU backend's table entry (forwards to qlinear_forward).
const QuantizedLinearOps& CpuQuantizedLinearOps();

}  // namespace tern::kernels
