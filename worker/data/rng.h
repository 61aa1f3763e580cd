// Deterministic, platform-independent randomness for data order (shuffles, splits).
//
// Everything here is fully specified so that the same seed gives the same order with any
// compiler or standard library (and can be reproduced in Python):
//  - DeriveSeed(seed, stream) = SplitMix64 finalizer of (seed + 0x9E3779B97F4A7C15 * (stream+1)).
//  - The generator is std::mt19937_64 (its output sequence is fixed by the C++ standard),
//    seeded with the single 64-bit value from DeriveSeed.
//  - UniformBelow(g, n): draw r = g() until r >= (2^64 - n) mod n, return r mod n (unbiased
//    rejection; std::uniform_int_distribution is implementation-defined, so it is not used).
//  - Shuffle: Durstenfeld's Fisher-Yates, for i = n-1 down to 1: j = UniformBelow(g, i+1),
//    swap(a[i], a[j]). std::shuffle is implementation-defined, so it is not used.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

namespace tern::data {

// Independent 64-bit seed for sub-stream `stream` (e.g. an epoch number) of `seed`.
uint64_t DeriveSeed(uint64_t seed, uint64_t stream);

// Unbiased integer in [0, n); n > 0.
uint64_t UniformBelow(std::mt19937_64& gen, uint64_t n);

// In-place Fisher-Yates shuffle (see the file comment for the exact algorithm).
template <typename T>
void Shuffle(std::span<T> values, std::mt19937_64& gen) {
  for (size_t i = values.size(); i > 1; --i) {
    size_t j = static_cast<size_t>(UniformBelow(gen, i));
    std::swap(values[i - 1], values[j]);
  }
}

// Fills `perm` with a permutation of [0, n): identity, then Shuffle with mt19937_64(seed).
template <typename T>
void FillPermutation(uint64_t n, uint64_t seed, std::vector<T>* perm) {
  perm->resize(n);
  for (uint64_t i = 0; i < n; ++i) (*perm)[i] = static_cast<T>(i);
  std::mt19937_64 gen(seed);
  Shuffle(std::span<T>(*perm), gen);
}

}  // namespace tern::data
