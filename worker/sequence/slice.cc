#include "worker/sequence/slice.h"

#include "worker/core/status.h"

namespace tern::sequence {

std::vector<int32_t> ContiguousPositions(int seq_len, int ranks, int rank) {
  TERN_CHECK(ranks >= 1 && seq_len % ranks == 0 && rank >= 0 && rank < ranks)
      << "seq_len " << seq_len << " ranks " << ranks << " rank " << rank;
  const int n = seq_len / ranks;
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) p[static_cast<size_t>(i)] = rank * n + i;
  return p;
}

std::vector<int32_t> FpdtPositions(int seq_len, int ranks, int rank, int chunk) {
  TERN_CHECK(ranks >= 1 && chunk >= 1 && seq_len % (ranks * chunk) == 0 && rank >= 0 &&
             rank < ranks)
      << "seq_len " << seq_len << " ranks " << ranks << " rank " << rank << " chunk " << chunk;
  std::vector<int32_t> p;
  p.reserve(size_t(seq_len / ranks));
  for (int k = 0; k < seq_len / (ranks * chunk); ++k)
    for (int t = 0; t < chunk; ++t) p.push_back((k * ranks + rank) * chunk + t);
  return p;
}

void SliceByPositions(const int32_t* full, int B, int seq_len,
                      const std::vector<int32_t>& positions, int32_t* out) {
  const size_t n = positions.size();
  for (int b = 0; b < B; ++b)
    for (size_t i = 0; i < n; ++i) {
      TERN_CHECK(positions[i] >= 0 && positions[i] < seq_len) << "position " << positions[i];
      out[size_t(b) * n + i] = full[size_t(b) * seq_len + size_t(positions[i])];
    }
}

int64_t CountTargets(const int32_t* targets, int64_t n) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i) c += targets[i] >= 0 ? 1 : 0;
  return c;
}

}  // namespace tern::sequence
