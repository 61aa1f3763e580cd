// Which tokens of a sample a sequence-parallel rank holds, as a positions vector: the contiguous
// layout (DeepSpeed-Ulysses: rank r of P holds [r*n, (r+1)*n)) is one choice; the slicing takes
// any positions vector, so a permuted layout reuses it.
#pragma once

#include <cstdint>
#include <vector>

namespace tern::sequence {

// Positions r*n .. (r+1)*n - 1, n = seq_len / ranks (the caller checked the division).
std::vector<int32_t> ContiguousPositions(int seq_len, int ranks, int rank);

// FPDT's round-robin layout (DeepSpeed's FPDT_InputConstruct): the sequence cut into blocks of
// `chunk` tokens (the local chunk, the global chunk_size / ranks); rank r holds blocks r, r +
// ranks, r + 2 ranks, ..., so its local chunk k exchanged over the group is the contiguous span
// of blocks k * ranks .. k * ranks + ranks - 1. seq_len % (ranks * chunk) == 0.
std::vector<int32_t> FpdtPositions(int seq_len, int ranks, int rank, int chunk);

// out (B, n) = full (B, seq_len) at positions[0..n) of every row.
void SliceByPositions(const int32_t* full, int B, int seq_len,
                      const std::vector<int32_t>& positions, int32_t* out);

// Targets >= 0 (counted by the loss) among `n` values.
int64_t CountTargets(const int32_t* targets, int64_t n);

}  // namespace tern::sequence
