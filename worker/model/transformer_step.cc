// Forward and backward passes of the Transformer (see transformer.h).
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "worker/core/status.h"
#include "worker/model/transformer.h"

namespace tern::model {

namespace k = tern::kernels;
using k::WeightLayout;

template <typename T>
void Transformer<T>::BlockForward(const T* p, LayerActs& a, const T* x, T* out, int B, int Tn,
                                  T* cache, int capacity, const int* pos0, int layer) {
  const QuantizedLayer* ql = QuantLayer(layer);
  const auto& d = dims_;
  const int N = B * Tn, C = d.C, F = d.F, A = d.NH * d.HS, QKV = d.QKV();
  const bool g2 = d.is_gpt2();
  const WeightLayout wl = g2 ? WeightLayout::kInOut : WeightLayout::kOutIn;
  const T* nb = g2 ? p + lo_.ln1_b : nullptr;
  NormForward(a.ln1.data(), a.ln1_mean.data(), a.ln1_rstd.data(), x, p + lo_.ln1_w, nb, N);
  Linear(a.qkv.data(), a.ln1.data(), p + lo_.qkv_w, g2 ? p + lo_.qkv_b : nullptr, N, C, QKV, wl,
         ql ? &ql->qkv : nullptr);
  if (cache == nullptr) {
    if (MsPoeLayer(layer)) {
      MsPoeRope(a.qkv.data(), B, Tn, TokenPositions(), layer);
    } else if (!g2) {
      ops_->rope_forward(a.qkv.data(), RopeCos(), RopeSin(), B, Tn, d.NH, d.NKV, d.HS,
                         TokenPositions());
    }
    if (SequenceParallel()) {  // the whole sequence, this rank's heads (transformer_sequence.cc)
      SequenceAttentionForward(a, B, Tn);
    } else {
      ops_->chunked_attention_forward(a.atty.data(), a.lse.data(), a.qkv.data(), B, Tn, d.NH, d.NKV,
                                      d.HS);
    }
  } else {
    if (!g2) {
      std::vector<int32_t> pos(static_cast<size_t>(N));
      for (int n = 0; n < N; ++n) pos[n] = pos0[n / Tn] + n % Tn;
      if (MsPoeLayer(layer)) {
        MsPoeRope(a.qkv.data(), B, Tn, pos.data(), layer);
      } else {
        ops_->rope_forward(a.qkv.data(), RopeCos(), RopeSin(), B, Tn, d.NH, d.NKV, d.HS,
                           pos.data());
      }
    }
    // Append the new rows, then attend from them to positions [0, pos0 + Tn) of each sequence.
    for (int b = 0; b < B; ++b) {
      T* row = cache + (size_t(b) * capacity + pos0[b]) * QKV;
      std::copy(a.qkv.data() + size_t(b) * Tn * QKV, a.qkv.data() + size_t(b + 1) * Tn * QKV, row);
      ops_->chunked_attention_pair_forward(
          a.atty.data() + size_t(b) * Tn * A, a.lse.data() + size_t(b) * d.NH * Tn,
          a.qkv.data() + size_t(b) * Tn * QKV, Tn, pos0[b], cache + size_t(b) * capacity * QKV,
          pos0[b] + Tn, 0, 1, d.NH, d.NKV, d.HS);
    }
  }
  Linear(proj_.data(), a.atty.data(), p + lo_.o_w, g2 ? p + lo_.o_b : nullptr, N, A, C, wl,
         ql ? &ql->o : nullptr);
  ops_->residual_forward(a.mid.data(), x, proj_.data(), size_t(N) * C);
  NormForward(a.ln2.data(), a.ln2_mean.data(), a.ln2_rstd.data(), a.mid.data(), p + lo_.ln2_w,
              g2 ? p + lo_.ln2_b : nullptr, N);
  if (g2) {
    Linear(a.fc.data(), a.ln2.data(), p + lo_.fc_w, p + lo_.fc_b, N, C, F, wl,
           ql ? &ql->fc : nullptr);
    ops_->gelu_forward(a.act.data(), a.fc.data(), size_t(N) * F);
  } else {
    Linear(a.fc.data(), a.ln2.data(), p + lo_.fc_w, static_cast<const T*>(nullptr), N, C, 2 * F, wl,
           ql ? &ql->fc : nullptr);
    ops_->swiglu_forward(a.act.data(), a.fc.data(), N, F);
  }
  Linear(proj_.data(), a.act.data(), p + lo_.proj_w, g2 ? p + lo_.proj_b : nullptr, N, F, C, wl,
         ql ? &ql->proj : nullptr);
  ops_->residual_forward(out, a.mid.data(), proj_.data(), size_t(N) * C);
}

template <typename T>
void Transformer<T>::HeadForward(ParamSource<T>& src, int N) {
  const auto& d = dims_;
  const int hu = d.L + 1;
  const T* ph = src.Acquire(hu);
  NormForward(lnf_.data(), lnf_mean_.data(), lnf_rstd_.data(), resid_[d.L].data(), ph + lnf_w_off_,
              d.is_gpt2() ? ph + lnf_b_off_ : nullptr, N);
  if (quant_ != nullptr) {
    Linear(logits_.data(), lnf_.data(), nullptr, static_cast<const T*>(nullptr), N, d.C, d.V,
           WeightLayout::kOutIn, &quant_->head);
  } else if (d.tied) {
    const T* pe = src.Acquire(0);
    ops_->matmul_forward(logits_.data(), lnf_.data(), pe + (wte_off_ - table_.units()[0].offset),
                         static_cast<const T*>(nullptr), N, d.C, d.V, WeightLayout::kOutIn);
    src.Release(0);
  } else {
    ops_->matmul_forward(logits_.data(), lnf_.data(), ph + head_off_,
                         static_cast<const T*>(nullptr), N, d.C, d.V, WeightLayout::kOutIn);
  }
  src.Release(hu);
}

template <typename T>
double Transformer<T>::Forward(ParamSource<T>& src, const int32_t* tokens, const int32_t* targets,
                               int B, int Tn) {
  TERN_CHECK(!ms_poe_on_ || (fpdt_.chunk == 0 && !SequenceParallel()))
      << "Ms-PoE runs without FPDT and sequence parallelism";
  if (fpdt_.chunk > 0) return ForwardFpdt(src, tokens, targets, B, Tn);
  const absl::Status reserved = Reserve(B, Tn);
  TERN_CHECK(reserved.ok()) << reserved;
  const auto& d = dims_;
  const int N = B * Tn, C = d.C;
  // The sequence's largest position: sequence-parallel ranks hold blocks of the group's whole
  // sequence, so every rank picks the table the whole sequence picks.
  int64_t max_pos = Tn - 1;
  if (SequenceParallel()) {
    max_pos = int64_t(seq_->size()) * Tn - 1;
  } else if (!seq_positions_.empty()) {
    max_pos = *std::max_element(seq_positions_.begin(), seq_positions_.end());
  }
  PickRopeTable(max_pos);
  if (ms_poe_on_) {
    ms_poe_slots_.assign(size_t(B) * d.L * d.NKV, -1);
    MsPoeBeginPass(B, ms_poe_slots_.data(), nullptr);
  }
  tokens_ = tokens;
  targets_ = targets;
  const T* p0 = src.Acquire(0);
  ops_->embedding_forward(resid_[0].data(), tokens, p0 + (wte_off_ - table_.units()[0].offset),
                          d.is_gpt2() ? p0 + (wpe_off_ - table_.units()[0].offset) : nullptr, B, Tn,
                          C, TokenPositions());
  src.Release(0);
  for (int l = 0; l < d.L; ++l) {
    const T* p = src.Acquire(l + 1);
    BlockForward(p, acts_[recompute_ ? 0 : l], resid_[l].data(), resid_[l + 1].data(), B, Tn,
                 nullptr, 0, nullptr, l);
    src.Release(l + 1);
  }
  HeadForward(src, N);
  if (targets == nullptr) return 0.0;
  count_ = ops_->crossentropy_softmax_forward(losses_.data(), probs_.data(), logits_.data(),
                                              targets, N, d.V);
  double sum = 0;
  for (int i = 0; i < N; ++i) sum += losses_[i];
  return count_ > 0 ? sum / count_ : 0.0;
}

template <typename T>
absl::StatusOr<typename Transformer<T>::KvCache> Transformer<T>::NewKvCache(int B,
                                                                            int capacity) const {
  if (capacity < 1 || capacity > dims_.max_T) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache of ", capacity, " positions; the model has ", dims_.max_T));
  }
  KvCache c;
  c.B = B;
  c.capacity = capacity;
  c.len.assign(B, 0);
  for (int l = 0; l < dims_.L; ++l) {
    TERN_ASSIGN_OR_RETURN(
        Buffer<T> layer,
        Buffer<T>::Create(*backend_.device, size_t(B) * capacity * dims_.QKV(), MemoryTier::kDevice,
                          absl::StrCat("KV cache of layer ", l)));
    c.layers.push_back(std::move(layer));
  }
  return c;
}

template <typename T>
void Transformer<T>::ForwardCached(ParamSource<T>& src, const int32_t* tokens, int B, int Tn,
                                   KvCache* cache, int row0, int64_t batch_max_pos) {
  TERN_CHECK(fpdt_.chunk == 0) << "FPDT is for training; decode without it";
  TERN_CHECK(cache != nullptr && row0 >= 0 && row0 + B <= cache->B)
      << "rows " << row0 << ".." << row0 + B - 1 << " of a KV cache of " << (cache ? cache->B : 0);
  const int* pos0 = cache->len.data() + row0;
  for (int b = 0; b < B; ++b)
    TERN_CHECK(pos0[b] + Tn <= cache->capacity)
        << "KV cache row " << row0 + b << " of " << cache->capacity << " positions cannot take "
        << Tn << " more after " << pos0[b];
  const absl::Status reserved = Reserve(B, Tn);
  TERN_CHECK(reserved.ok()) << reserved;
  const auto& d = dims_;
  const int N = B * Tn, C = d.C;
  // LongRoPE as Hugging Face decodes: the table is picked per call by the call's largest
  // position, and the cached keys keep the rotation of the call that computed them. So a prompt
  // within original_max_position_embeddings caches short-factor keys, and once decoding passes
  // it, new queries/keys use the long factors while the earlier keys stay short-rotated (HF's
  // quirk: the same positions rotated in one long call differ from this incremental result).
  // `batch_max_pos`: the largest position of the batch this call is part of.
  int64_t max_pos = batch_max_pos;
  for (int b = 0; b < B; ++b) max_pos = std::max<int64_t>(max_pos, pos0[b] + Tn - 1);
  PickRopeTable(max_pos);
  if (ms_poe_on_) {
    const size_t per = size_t(d.L) * d.NKV;
    if (cache->ms_poe_slots.size() != size_t(cache->B) * per)
      cache->ms_poe_slots.assign(size_t(cache->B) * per, -1);
    MsPoeBeginPass(B, cache->ms_poe_slots.data() + size_t(row0) * per, pos0);
  }
  tokens_ = tokens;
  targets_ = nullptr;
  const T* p0 = src.Acquire(0);
  const uint64_t u0 = table_.units()[0].offset;
  // Learned positions (GPT-2): rows pos0[b].. of wpe for row b.
  for (int b = 0; b < (d.is_gpt2() ? B : 1); ++b) {
    ops_->embedding_forward(resid_[0].data() + size_t(b) * Tn * C, tokens + size_t(b) * Tn,
                            p0 + (wte_off_ - u0),
                            d.is_gpt2() ? p0 + (wpe_off_ - u0) + size_t(pos0[b]) * C : nullptr,
                            d.is_gpt2() ? 1 : B, Tn, C);
  }
  src.Release(0);
  for (int l = 0; l < d.L; ++l) {
    const T* p = src.Acquire(l + 1);
    BlockForward(p, acts_[recompute_ ? 0 : l], resid_[l].data(), resid_[l + 1].data(), B, Tn,
                 cache->layers[l].data() + size_t(row0) * cache->capacity * d.QKV(),
                 cache->capacity, pos0, l);
    src.Release(l + 1);
  }
  for (int b = 0; b < B; ++b) cache->len[row0 + b] += Tn;
  HeadForward(src, N);
}

template <typename T>
void Transformer<T>::BlockBackward(const T* p, T* g, const LayerActs& a, const T* x, T* dx, int B,
                                   int Tn) {
  // dx: gradient w.r.t. the block's output on entry, w.r.t. its input on exit.
  const auto& d = dims_;
  const int N = B * Tn, C = d.C, F = d.F, A = d.NH * d.HS, QKV = d.QKV();
  const bool g2 = d.is_gpt2();
  const WeightLayout wl = g2 ? WeightLayout::kInOut : WeightLayout::kOutIn;
  auto bias = [g2](T* base, uint64_t off) { return g2 ? base + off : nullptr; };
  // MLP.
  ops_->matmul_backward(dact_.data(), g + lo_.proj_w, bias(g, lo_.proj_b), dx, a.act.data(),
                        p + lo_.proj_w, N, F, C, wl);
  if (g2) {
    ops_->gelu_backward(dfc_.data(), dact_.data(), a.fc.data(), size_t(N) * F);
    ops_->matmul_backward(dln_.data(), g + lo_.fc_w, g + lo_.fc_b, dfc_.data(), a.ln2.data(),
                          p + lo_.fc_w, N, C, F, wl);
  } else {
    ops_->swiglu_backward(dfc_.data(), dact_.data(), a.fc.data(), N, F);
    ops_->matmul_backward(dln_.data(), g + lo_.fc_w, static_cast<T*>(nullptr), dfc_.data(),
                          a.ln2.data(), p + lo_.fc_w, N, C, 2 * F, wl);
  }
  NormBackward(dtmp_.data(), g + lo_.ln2_w, bias(g, lo_.ln2_b), dln_.data(), a.mid.data(),
               p + lo_.ln2_w, a.ln2_mean.data(), a.ln2_rstd.data(), N);
  ops_->residual_backward(dx, static_cast<T*>(nullptr), dtmp_.data(), size_t(N) * C);
  // Attention.
  ops_->matmul_backward(datty_.data(), g + lo_.o_w, bias(g, lo_.o_b), dx, a.atty.data(),
                        p + lo_.o_w, N, A, C, wl);
  if (SequenceParallel()) {  // transformer_sequence.cc
    SequenceAttentionBackward(a, B, Tn);
  } else {
    ops_->chunked_attention_backward(dqkv_.data(), datty_.data(), a.atty.data(), a.lse.data(),
                                     a.qkv.data(), B, Tn, d.NH, d.NKV, d.HS);
  }
  if (!g2)
    ops_->rope_backward(dqkv_.data(), RopeCos(), RopeSin(), B, Tn, d.NH, d.NKV, d.HS,
                        TokenPositions());
  ops_->matmul_backward(dln_.data(), g + lo_.qkv_w, bias(g, lo_.qkv_b), dqkv_.data(), a.ln1.data(),
                        p + lo_.qkv_w, N, C, QKV, wl);
  NormBackward(dtmp_.data(), g + lo_.ln1_w, bias(g, lo_.ln1_b), dln_.data(), x, p + lo_.ln1_w,
               a.ln1_mean.data(), a.ln1_rstd.data(), N);
  ops_->residual_backward(dx, static_cast<T*>(nullptr), dtmp_.data(), size_t(N) * C);
}

template <typename T>
void Transformer<T>::Backward(ParamSource<T>& src, float grad_scale) {
  TERN_CHECK(targets_ != nullptr) << "Backward without a Forward with targets";
  TERN_CHECK(quant_ == nullptr) << "Backward of a model with quantized weights";
  TERN_CHECK(!ms_poe_on_) << "Ms-PoE is for inference: clear_ms_poe before a backward";
  if (fpdt_.chunk > 0) return BackwardFpdt(src, grad_scale);
  const auto& d = dims_;
  const int B = B_, Tn = T_, N = B * Tn, C = d.C;
  const uint64_t u0 = table_.units()[0].offset;
  const float dloss = count_ > 0 ? grad_scale / count_ : 0.0f;
  ops_->crossentropy_softmax_backward(dlogits_.data(), dloss, probs_.data(), targets_, N, d.V);
  const int hu = d.L + 1;
  const T* ph = src.Acquire(hu);
  T* gh = src.Grads(hu);
  if (d.tied) {
    const T* pe = src.Acquire(0);
    T* ge = src.Grads(0);
    ops_->matmul_backward(dln_.data(), ge + (wte_off_ - u0), static_cast<T*>(nullptr),
                          dlogits_.data(), lnf_.data(), pe + (wte_off_ - u0), N, C, d.V,
                          WeightLayout::kOutIn);
    src.Release(0);
  } else {
    ops_->matmul_backward(dln_.data(), gh + head_off_, static_cast<T*>(nullptr), dlogits_.data(),
                          lnf_.data(), ph + head_off_, N, C, d.V, WeightLayout::kOutIn);
  }
  NormBackward(dx_.data(), gh + lnf_w_off_, d.is_gpt2() ? gh + lnf_b_off_ : nullptr, dln_.data(),
               resid_[d.L].data(), ph + lnf_w_off_, lnf_mean_.data(), lnf_rstd_.data(), N);
  src.Release(hu);
  src.GradsReady(hu);
  for (int l = d.L - 1; l >= 0; --l) {
    const T* p = src.Acquire(l + 1);
    // Activation checkpointing: the layer's forward again from its kept input (its output
    // resid_[l + 1] is written with the same values), then its backward.
    if (recompute_) BlockForward(p, acts_[0], resid_[l].data(), resid_[l + 1].data(), B, Tn);
    BlockBackward(p, src.Grads(l + 1), acts_[recompute_ ? 0 : l], resid_[l].data(), dx_.data(), B,
                  Tn);
    src.Release(l + 1);
    src.GradsReady(l + 1);
  }
  src.Acquire(0);
  T* g0 = src.Grads(0);
  ops_->embedding_backward(g0 + (wte_off_ - u0), d.is_gpt2() ? g0 + (wpe_off_ - u0) : nullptr,
                           dx_.data(), tokens_, B, Tn, C, TokenPositions());
  src.Release(0);
  src.GradsReady(0);
}

#define TERN_INSTANTIATE(T)                                                                        \
  template void Transformer<T>::BlockForward(const T*, LayerActs&, const T*, T*, int, int, T*,     \
                                             int, const int*, int);                                \
  template void Transformer<T>::HeadForward(ParamSource<T>&, int);                                 \
  template absl::StatusOr<typename Transformer<T>::KvCache> Transformer<T>::NewKvCache(int, int)   \
      const;                                                                                       \
  template void Transformer<T>::ForwardCached(ParamSource<T>&, const int32_t*, int, int, KvCache*, \
                                              int, int64_t);                                       \
  template double Transformer<T>::Forward(ParamSource<T>&, const int32_t*, const int32_t*, int,    \
                                          int);                                                    \
  template void Transformer<T>::BlockBackward(const T*, T*, const LayerActs&, const T*, T*, int,   \
                                              int);                                                \
  template void Transformer<T>::Backward(ParamSource<T>&, float);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)

}  // namespace tern::model
