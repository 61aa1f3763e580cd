// CRC32C (Castagnoli), the checksum of every checkpoint fragment. Uses the SSE4.2 crc32
// instruction when the build targets it (-march=native on x86-64), else slice-by-8 tables.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tern::ckpt {

// Extends `crc` (a finished CRC32C of earlier bytes, 0 for none) over `n` more bytes, so
// Crc32cExtend(Crc32cExtend(0, a, na), b, nb) == CRC32C of a followed by b.
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);

// CRC32C of one buffer. Crc32c("123456789", 9) == 0xE3069283.
inline uint32_t Crc32c(const void* data, size_t n) { return Crc32cExtend(0, data, n); }

// The table-driven implementation (always available; tests compare it to the fast one).
uint32_t Crc32cExtendPortable(uint32_t crc, const void* data, size_t n);

// True when Crc32cExtend uses the hardware instruction.
bool Crc32cIsHardware();

}  // namespace tern::ckpt
