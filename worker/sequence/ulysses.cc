#include "worker/sequence/ulysses.h"

#include <algorithm>
#include <cstring>
#include <span>

#include "absl/strings/str_cat.h"
#include "worker/core/status.h"

namespace tern::sequence {

using model::SequenceRows;

template <typename T>
absl::StatusOr<std::unique_ptr<UlyssesExchange<T>>> UlyssesExchange<T>::Create(
    comm::Communicator* comm, int nh, int nkv, int hs, std::chrono::milliseconds timeout,
    Device* device) {
  if (comm == nullptr) return absl::InvalidArgumentError("UlyssesExchange: no communicator");
  if (hs < 1) return absl::InvalidArgumentError(absl::StrCat("UlyssesExchange: head size ", hs));
  TERN_ASSIGN_OR_RETURN(std::vector<HeadBlock> blocks, PlanHeadSplit(nh, nkv, comm->size()));
  return std::unique_ptr<UlyssesExchange<T>>(
      new UlyssesExchange<T>(comm, std::move(blocks), nh, nkv, hs, timeout,
                             device != nullptr ? device : &DefaultDevice()));
}

template <typename T>
UlyssesExchange<T>::UlyssesExchange(comm::Communicator* comm, std::vector<HeadBlock> blocks, int nh,
                                    int nkv, int hs, std::chrono::milliseconds timeout,
                                    Device* device)
    : comm_(comm),
      blocks_(std::move(blocks)),
      nh_(nh),
      nkv_(nkv),
      hs_(hs),
      timeout_(timeout),
      device_(device) {}

template <typename T>
int UlyssesExchange<T>::Width(SequenceRows rows) const {
  return rows == SequenceRows::kQkv ? (nh_ + 2 * nkv_) * hs_ : nh_ * hs_;
}

template <typename T>
int UlyssesExchange<T>::Width(SequenceRows rows, int r) const {
  const HeadBlock& b = blocks_[static_cast<size_t>(r)];
  return rows == SequenceRows::kQkv ? (b.q_count + 2 * b.kv_count) * hs_ : b.q_count * hs_;
}

template <typename T>
std::vector<std::pair<int, int>> UlyssesExchange<T>::Segments(SequenceRows rows, int r) const {
  const HeadBlock& b = blocks_[static_cast<size_t>(r)];
  std::vector<std::pair<int, int>> s = {{b.q_begin * hs_, b.q_count * hs_}};
  if (rows == SequenceRows::kQkv) {
    s.emplace_back((nh_ + b.kv_begin) * hs_, b.kv_count * hs_);
    s.emplace_back((nh_ + nkv_ + b.kv_begin) * hs_, b.kv_count * hs_);
  }
  return s;
}

template <typename T>
absl::Status UlyssesExchange<T>::Fit(Buffer<T>& b, size_t n, const char* what) {
  if (b.size() >= n) return absl::OkStatus();
  b.reset();
  TERN_ASSIGN_OR_RETURN(b, Buffer<T>::Create(*device_, n, MemoryTier::kDevice,
                                             absl::StrCat("Ulysses all-to-all ", what, " buffer")));
  return absl::OkStatus();
}

template <typename T>
size_t UlyssesExchange<T>::Sum(const std::vector<size_t>& v) const {
  size_t s = 0;
  for (size_t x : v) s += x;
  return s;
}

template <typename T>
absl::Status UlyssesExchange<T>::Reserve(int B, int n) {
  // Scatter sends rows of every head and receives P blocks of this rank's; gather the reverse;
  // for both row formats.
  const size_t rows = size_t(B) * n, P = size();
  size_t most = 0;
  for (SequenceRows r : {SequenceRows::kQkv, SequenceRows::kAttnOut})
    most = std::max({most, rows * size_t(Width(r)), rows * P * size_t(Width(r, rank()))});
  TERN_RETURN_IF_ERROR(Fit(send_, most, "send"));
  return Fit(recv_, most, "receive");
}

template <typename T>
absl::Status UlyssesExchange<T>::Exchange(const std::vector<size_t>& send_elems,
                                          const std::vector<size_t>& recv_elems) {
  comm::CollectiveOptions co;
  co.timeout = timeout_;
  const auto in = std::as_bytes(std::span<const T>(send_.data(), Sum(send_elems)));
  const auto out = std::as_writable_bytes(std::span<T>(recv_.data(), Sum(recv_elems)));
  const bool even = std::all_of(send_elems.begin(), send_elems.end(),
                                [&](size_t e) { return e == send_elems[0]; }) &&
                    std::all_of(recv_elems.begin(), recv_elems.end(),
                                [&](size_t e) { return e == send_elems[0]; });
  if (even) return comm_->AllToAll(in, out, co);
  std::vector<size_t> sb(send_elems.size()), rb(recv_elems.size());
  for (size_t j = 0; j < sb.size(); ++j) {
    sb[j] = send_elems[j] * sizeof(T);
    rb[j] = recv_elems[j] * sizeof(T);
  }
  return comm_->AllToAllV(in, sb, out, rb, co);
}

template <typename T>
absl::Status UlyssesExchange<T>::ScatterHeads(SequenceRows rows, T* out, const T* in, int B,
                                              int n) {
  const int P = size(), me = rank(), W = Width(rows), Wme = Width(rows, me);
  const size_t rows_n = size_t(B) * n;
  std::vector<size_t> send_elems(P), recv_elems(P, rows_n * Wme);
  size_t total = 0;
  for (int j = 0; j < P; ++j) total += (send_elems[j] = rows_n * Width(rows, j));
  TERN_RETURN_IF_ERROR(Fit(send_, total, "send"));
  TERN_RETURN_IF_ERROR(Fit(recv_, rows_n * Wme * P, "receive"));
  // Pack: block j holds (B, n, W_j), the columns of rank j's heads.
  T* dst = send_.data();
  for (int j = 0; j < P; ++j) {
    const auto segs = Segments(rows, j);
    for (size_t row = 0; row < rows_n; ++row) {
      const T* src = in + row * W;
      for (const auto& [off, len] : segs) {
        std::memcpy(dst, src + off, size_t(len) * sizeof(T));
        dst += len;
      }
    }
  }
  TERN_RETURN_IF_ERROR(Exchange(send_elems, recv_elems));
  // Unpack: block j (B, n, Wme) from rank j -> tokens [j*n, (j+1)*n) of every sequence.
  for (int j = 0; j < P; ++j)
    for (int b = 0; b < B; ++b)
      std::memcpy(out + (size_t(b) * P * n + size_t(j) * n) * Wme,
                  recv_.data() + (size_t(j) * rows_n + size_t(b) * n) * Wme,
                  size_t(n) * Wme * sizeof(T));
  return absl::OkStatus();
}

template <typename T>
absl::Status UlyssesExchange<T>::GatherHeads(SequenceRows rows, T* out, const T* in, int B, int n) {
  const int P = size(), me = rank(), W = Width(rows), Wme = Width(rows, me);
  const size_t rows_n = size_t(B) * n;
  std::vector<size_t> send_elems(P, rows_n * Wme), recv_elems(P);
  size_t total = 0;
  for (int j = 0; j < P; ++j) total += (recv_elems[j] = rows_n * Width(rows, j));
  TERN_RETURN_IF_ERROR(Fit(send_, rows_n * Wme * P, "send"));
  TERN_RETURN_IF_ERROR(Fit(recv_, total, "receive"));
  // Pack: block j holds tokens [j*n, (j+1)*n) of every sequence, this rank's heads.
  for (int j = 0; j < P; ++j)
    for (int b = 0; b < B; ++b)
      std::memcpy(send_.data() + (size_t(j) * rows_n + size_t(b) * n) * Wme,
                  in + (size_t(b) * P * n + size_t(j) * n) * Wme, size_t(n) * Wme * sizeof(T));
  TERN_RETURN_IF_ERROR(Exchange(send_elems, recv_elems));
  // Unpack: block j (B, n, W_j) holds rank j's heads of this rank's tokens.
  const T* src = recv_.data();
  for (int j = 0; j < P; ++j) {
    const auto segs = Segments(rows, j);
    for (size_t row = 0; row < rows_n; ++row) {
      T* o = out + row * W;
      for (const auto& [off, len] : segs) {
        std::memcpy(o + off, src, size_t(len) * sizeof(T));
        src += len;
      }
    }
  }
  return absl::OkStatus();
}

template class UlyssesExchange<float>;
template class UlyssesExchange<double>;

}  // namespace tern::sequence
