// Sequence parallelism in the Transformer (see set_sequence in transformer.h): per-token
// positions for RoPE and GPT-2's learned positions, and the attention of a layer over the whole
// sequence for this rank's heads through a SequenceExchange (DeepSpeed-Ulysses).
#include <algorithm>
#include <utility>

#include "kernels/cpu/ops.h"
#include "worker/core/status.h"
#include "worker/model/transformer.h"

namespace tern::model {

namespace k = tern::kernels;

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
void Transformer<T>::ReserveSequence(int B, int Tn) {
  seq_pos_.clear();
  if (!seq_positions_.empty()) {
    TERN_CHECK(int(seq_positions_.size()) == Tn)
        << seq_positions_.size() << " positions for sequences of " << Tn << " tokens";
    seq_pos_.resize(size_t(B) * Tn);
    for (int b = 0; b < B; ++b)
      std::copy(seq_positions_.begin(), seq_positions_.end(), seq_pos_.begin() + size_t(b) * Tn);
  }
  if (!SequenceParallel()) return;
  // The gathered blocks in group rank order must be the sequence in order (causal attention).
  for (int i = 0; i < Tn; ++i)
    TERN_CHECK(seq_positions_[size_t(i)] == seq_->rank() * Tn + i)
        << "sequence parallelism: token " << i << " of rank " << seq_->rank() << " is at "
        << seq_positions_[size_t(i)] << ", not " << seq_->rank() * Tn + i;
  const size_t Tg = size_t(seq_->size()) * Tn, nh = seq_->local_heads(),
               nkv = seq_->local_kv_heads(), hs = dims_.HS;
  const size_t qkv = (nh + 2 * nkv) * hs, att = nh * hs;
  for (auto& a : acts_) {
    a.seq.qkv.resize(size_t(B) * Tg * qkv);
    a.seq.out.resize(size_t(B) * Tg * att);
    a.seq.lse.resize(size_t(B) * nh * Tg);
  }
  seq_dout_.resize(size_t(B) * Tg * att);
  seq_dqkv_.resize(size_t(B) * Tg * qkv);
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
  k::chunked_attention_forward(a.seq.out.data(), a.seq.lse.data(), a.seq.qkv.data(), B, Tg, nh, nkv,
                               dims_.HS);
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
  k::chunked_attention_backward(seq_dqkv_.data(), seq_dout_.data(), a.seq.out.data(),
                                a.seq.lse.data(), a.seq.qkv.data(), B, Tg, nh, nkv, dims_.HS);
  ok(seq_->GatherHeads(SequenceRows::kQkv, dqkv_.data(), seq_dqkv_.data(), B, Tn));
}

template <typename T>
void Transformer<T>::PositionEmbeddingForward(T* out, const int32_t* tokens, const T* wte,
                                              const T* wpe, int B, int Tn) {
  k::embedding_forward(out, tokens, wte, static_cast<const T*>(nullptr), B, Tn, dims_.C);
  if (wpe == nullptr) return;
  const size_t C = dims_.C;
  for (size_t n = 0; n < size_t(B) * Tn; ++n) {
    const T* row = wpe + size_t(seq_pos_[n]) * C;
    T* o = out + n * C;
    for (size_t c = 0; c < C; ++c) o[c] += row[c];
  }
}

template <typename T>
void Transformer<T>::PositionEmbeddingBackward(T* dwte, T* dwpe, const T* dout,
                                               const int32_t* tokens, int B, int Tn) {
  k::embedding_backward(dwte, static_cast<T*>(nullptr), dout, tokens, B, Tn, dims_.C);
  if (dwpe == nullptr) return;
  const size_t C = dims_.C;
  for (size_t n = 0; n < size_t(B) * Tn; ++n) {
    T* row = dwpe + size_t(seq_pos_[n]) * C;
    const T* d = dout + n * C;
    for (size_t c = 0; c < C; ++c) row[c] += d[c];
  }
}

#define TERN_INSTANTIATE(T)                                                                      \
  template void Transformer<T>::set_sequence(SequenceExchange<T>*, std::vector<int32_t>);        \
  template void Transformer<T>::ReserveSequence(int, int);                                       \
  template uint64_t Transformer<T>::SequenceElems() const;                                       \
  template void Transformer<T>::SequenceAttentionForward(LayerActs&, int, int);                  \
  template void Transformer<T>::SequenceAttentionBackward(const LayerActs&, int, int);           \
  template void Transformer<T>::PositionEmbeddingForward(T*, const int32_t*, const T*, const T*, \
                                                         int, int);                              \
  template void Transformer<T>::PositionEmbeddingBackward(T*, T*, const T*, const int32_t*, int, \
                                                          int);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)

}  // namespace tern::model
