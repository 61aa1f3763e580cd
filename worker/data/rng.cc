#include "worker/data/rng.h"

#include "worker/core/status.h"

namespace tern::data {

uint64_t DeriveSeed(uint64_t seed, uint64_t stream) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (stream + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t UniformBelow(std::mt19937_64& gen, uint64_t n) {
  TERN_CHECK(n > 0) << "UniformBelow(0)";
  const uint64_t threshold = (0 - n) % n;  // (2^64 - n) mod n == 2^64 mod n
  while (true) {
    uint64_t r = gen();
    if (r >= threshold) return r % n;
  }
}

}  // namespace tern::data
