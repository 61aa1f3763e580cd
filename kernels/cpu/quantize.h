// Symmetric block quantization for ZeRO++ (qwZ int8 weights, qgZ int4 gradients).
//
// A buffer of n floats is split into blocks of `block` consecutive elements (n % block == 0).
// Each block b has one fp32 scale s_b = absmax_b / qmax (qmax = 127 for int8, 7 for int4;
// s_b = 1 for an all-zero block) and its elements are stored as q = round(x / s_b), rounded
// half to even and clamped to [-qmax, qmax], so every dequantized value q * s_b is within
// s_b / 2 of x. int4 packs two values per byte: element 2i in the low nibble, element 2i+1 in
// the high nibble, each as a 4-bit two's complement value (block must be even).
//
// These kernels are single-threaded (SIMD only): they run beside the training thread, on the
// thread that drives the collectives, and must not start a second OpenMP team there.
// Argument order as everywhere: outputs, then inputs, then sizes. No allocation.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tern::kernels {

// Largest block the fused kernel accepts (it keeps one block of sums on the stack).
inline constexpr size_t kMaxQuantBlock = 16384;

// q (n), scales (n / block) <- x (n).
void quantize_int8(int8_t* q, float* scales, const float* x, size_t n, size_t block);
// out (n) = q * scale of its block.
void dequantize_int8(float* out, const int8_t* q, const float* scales, size_t n, size_t block);

// q (n / 2 bytes), scales (n / block) <- x (n). block even.
void quantize_int4(uint8_t* q, float* scales, const float* x, size_t n, size_t block);
// out (n) = dequantized q.
void dequantize_int4(float* out, const uint8_t* q, const float* scales, size_t n, size_t block);
// out (n) += dequantized q.
void dequantize_int4_add(float* out, const uint8_t* q, const float* scales, size_t n, size_t block);

// qgZ's middle step: the sum of m int4 buffers (q_in[j] with scales s_in[j], n elements each),
// requantized to int4 into q, scales with the same block size. block <= kMaxQuantBlock.
void dequant_sum_requant_int4(uint8_t* q, float* scales, const uint8_t* const* q_in,
                              const float* const* s_in, int m, size_t n, size_t block);

}  // namespace tern::kernels
