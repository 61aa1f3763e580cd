// Sequence parallelism in the Transformer (see set_sequence in transformer.h): per-token
// positions for RoPE and GPT-2's learned positions, and the attention of a layer over the whole
// sequence for this rank's heads through a SequenceExchange (DeepSpeed-Ulysses).
#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/core/status.h"
#include "worker/model/transformer.h"

namespace tern::model {

template <typename T>
void Transformer<T>::set_sequence(SequenceExchange<T>* exchange, std::vector<int32_t> positions) {
  if (exchange != nullptr && exchange->size() > 1) {
    TERN_CHECK(!positions.empty()) << "sequence parallelism needs the positions of the tokens";
    TERN_CHECK(exchange->local_heads() >= 1 && exchange->local_kv_heads() >= 1 &&
               exchange->local_heads() % exchange->local_kv_heads() == 0 &&
               exchange->local_heads() / exchange->local_kv_heads() == dims_.NH / dims_.NKV)
        << "local heads " << exchange->local_heads() << " / " << exchange->local_kv_heads();
  }
  for (int32_t p : positions)
    TERN_CHECK(p >= 0 && p < dims_.max_T)
        << "position " << p << " outside max_position_embeddings " << dims_.max_T;
  seq_ = exchange;
  seq_positions_ = std::move(positions);
  seq_status_ = absl::OkStatus();
  B_ = T_ = 0;  // the next Reserve sizes the buffers again
}

template <typename T>
void Transformer<T>::FreeSequence() {
  seq_pos_.clear();
  seq_dout_.reset();
  seq_dqkv_.reset();
  for (auto& a : acts_) {
    a.seq.qkv.reset();
    a.seq.out.reset();
    a.seq.lse.reset();
  }
}

template <typename T>
absl::Status Transformer<T>::ReserveSequence(int B, int Tn) {
  if (!seq_positions_.empty()) {
    TERN_CHECK(int(seq_positions_.size()) == Tn)
        << seq_positions_.size() << " positions for sequences of " << Tn << " tokens";
    seq_pos_.resize(size_t(B) * Tn);
    for (int b = 0; b < B; ++b)
      std::copy(seq_positions_.begin(), seq_positions_.end(), seq_pos_.begin() + size_t(b) * Tn);
  }
  if (!SequenceParallel()) return absl::OkStatus();
  // The gathered blocks in group rank order must be the sequence in order (causal attention).
  for (int i = 0; i < Tn; ++i)
    TERN_CHECK(seq_positions_[size_t(i)] == seq_->rank() * Tn + i)
        << "sequence parallelism: token " << i << " of rank " << seq_->rank() << " is at "
        << seq_positions_[size_t(i)] << ", not " << seq_->rank() * Tn + i;
  const size_t Tg = size_t(seq_->size()) * Tn, nh = seq_->local_heads(),
               nkv = seq_->local_kv_heads(), hs = dims_.HS;
  const size_t qkv = (nh + 2 * nkv) * hs, att = nh * hs;
  absl::Status status;
  auto alloc = [&](Buffer<T>& b, size_t n, const std::string& what) {
    if (!status.ok()) return;
    auto r = Buffer<T>::Create(
        *backend_.device, n, MemoryTier::kDevice,
        absl::StrCat("activations for ", B, "x", Tn, " tokens: sequence-parallel ", what));
    if (r.ok()) {
      b = std::move(*r);
    } else {
      status = r.status();
    }
  };
  for (size_t l = 0; l < acts_.size(); ++l) {
    LayerActs& a = acts_[l];
    const std::string p = recompute_ ? "recomputed layer " : absl::StrCat("layer ", l, " ");
    alloc(a.seq.qkv, size_t(B) * Tg * qkv, p + "qkv");
    alloc(a.seq.out, size_t(B) * Tg * att, p + "attention output");
    alloc(a.seq.lse, size_t(B) * nh * Tg, p + "attention lse");
  }
  alloc(seq_dout_, size_t(B) * Tg * att, "attention output gradient");
  alloc(seq_dqkv_, size_t(B) * Tg * qkv, "qkv gradient");
  if (status.ok()) status = seq_->Reserve(B, Tn);
  return status;
}

template <typename T>
uint64_t Transformer<T>::SequenceElems() const {
  uint64_t n = seq_dout_.size() + seq_dqkv_.size();
  for (const auto& a : acts_) n += a.seq.qkv.size() + a.seq.out.size() + a.seq.lse.size();
  return n;
}

template <typename T>
void Transformer<T>::SequenceAttentionForward(LayerActs& a, int B, int Tn) {
  const int Tg = seq_->size() * Tn, nh = seq_->local_heads(), nkv = seq_->local_kv_heads();
  auto ok = [this](absl::Status st) {
    if (seq_status_.ok() && !st.ok()) seq_status_ = std::move(st);
  };
  ok(seq_->ScatterHeads(SequenceRows::kQkv, a.seq.qkv.data(), a.qkv.data(), B, Tn));
  ops_->chunked_attention_forward(a.seq.out.data(), a.seq.lse.data(), a.seq.qkv.data(), B, Tg, nh,
                                  nkv, dims_.HS);
  ok(seq_->GatherHeads(SequenceRows::kAttnOut, a.atty.data(), a.seq.out.data(), B, Tn));
}

template <typename T>
void Transformer<T>::SequenceAttentionBackward(const LayerActs& a, int B, int Tn) {
  const int Tg = seq_->size() * Tn, nh = seq_->local_heads(), nkv = seq_->local_kv_heads();
  auto ok = [this](absl::Status st) {
    if (seq_status_.ok() && !st.ok()) seq_status_ = std::move(st);
  };
  // The backward of a gather is the scatter of the gradient, and the other way round.
  ok(seq_->ScatterHeads(SequenceRows::kAttnOut, seq_dout_.data(), datty_.data(), B, Tn));
  ops_->chunked_attention_backward(seq_dqkv_.data(), seq_dout_.data(), a.seq.out.data(),
                                   a.seq.lse.data(), a.seq.qkv.data(), B, Tg, nh, nkv, dims_.HS);
  ok(seq_->GatherHeads(SequenceRows::kQkv, dqkv_.data(), seq_dqkv_.data(), B, Tn));
}

#define TERN_INSTANTIATE(T)                                                               \
  template void Transformer<T>::set_sequence(SequenceExchange<T>*, std::vector<int32_t>); \
  template void Transformer<T>::FreeSequence();                                           \
  template absl::Status Transformer<T>::ReserveSequence(int, int);                        \
  template uint64_t Transformer<T>::SequenceElems() const;                                \
  template void Transformer<T>::SequenceAttentionForward(LayerActs&, int, int);           \
  template void Transformer<T>::SequenceAttentionBackward(const LayerActs&, int, int);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)

}  // namespace tern::model
