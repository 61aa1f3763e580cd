// FPDT: the chunked layer pipeline with offload (see Transformer::set_fpdt). Every chunk rides
// the same row-wise kernels as the whole-sequence path; attention pairs a query chunk with each
// earlier key chunk (chunked_attention_pair_*) and merges by log-sum-exp.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "worker/core/status.h"
#include "worker/model/transformer.h"

namespace tern::model {

namespace k = tern::kernels;
using k::WeightLayout;

namespace {

// Runs compute(k, slot) for k = 0..n-1; the copies fetch(k, slot) issues on `s` have landed
// before compute(k) runs, and step k + 1's copies are issued before compute(k), into the other
// of two slots (double buffering). Write-backs compute enqueues on `s` precede the next fetch
// into their slot (the stream is in order).
template <class Fetch, class Compute>
void Pipelined(Stream& s, int n, Fetch fetch, Compute compute) {
  if (n <= 0) return;
  fetch(0, 0);
  uint64_t ready = s.Record();
  for (int k = 0; k < n; ++k) {
    s.Wait(ready);
    if (k + 1 < n) {
      fetch(k + 1, (k + 1) % 2);
      ready = s.Record();
    }
    compute(k, k % 2);
  }
}

}  // namespace

template <typename T>
absl::Status Transformer<T>::ReserveFpdt(int B, int Tn) {
  auto& f = fpdt_state_;
  f = FpdtState{};
  const auto& d = dims_;
  // Over a sequence-parallel group of P ranks the chunk is global: each rank's local chunk is
  // chunk / P tokens, exchanged into the chunk's span of the sequence for this rank's heads.
  const int P = SequenceParallel() ? seq_->size() : 1;
  if (P > 1 && (fpdt_.chunk % P != 0 || Tn % (fpdt_.chunk / P) != 0))
    return absl::InvalidArgumentError(absl::StrCat(
        "FPDT chunk of ", fpdt_.chunk, " tokens over ", P, " sequence-parallel ranks of ", Tn,
        " tokens each: the chunk must be a multiple of the ranks and its share divide the ranks' "
        "tokens"));
  if (P > 1) {
    const int c = fpdt_.chunk / P;
    for (int i = 0; i < Tn; ++i) {
      const int want = ((i / c) * P + seq_->rank()) * c + i % c;
      if (int(seq_positions_.size()) != Tn || seq_positions_[size_t(i)] != want)
        return absl::InvalidArgumentError(
            absl::StrCat("FPDT over sequence-parallel ranks needs the round-robin layout: token ",
                         i, " of rank ", seq_->rank(), " must be at position ", want));
    }
  }
  const int c = P > 1 ? fpdt_.chunk / P : std::min(fpdt_.chunk, Tn);
  f.c = c;
  f.u = (Tn + c - 1) / c;
  f.P = P;
  f.nh = P > 1 ? seq_->local_heads() : d.NH;
  f.nkv = P > 1 ? seq_->local_kv_heads() : d.NKV;
  const size_t R = size_t(B) * c, N = size_t(B) * Tn, C = d.C, F = d.F, QKV = d.QKV(), V = d.V;
  const size_t A = size_t(d.NH) * d.HS, fc = d.is_gpt2() ? F : 2 * F;
  // Head-sharded rows: this rank's heads over the P chunks of the span (P = 1: the chunk).
  const size_t Rh = R * P, Nh = N * P, QKVh = size_t(f.nh + 2 * f.nkv) * d.HS,
               Ah = size_t(f.nh) * d.HS, NH = f.nh;
  const bool ln = d.is_gpt2(), rope = !d.is_gpt2();
  Device& dev = *backend_.device;
  const MemoryTier store = fpdt_.offload ? MemoryTier::kHost : MemoryTier::kDevice;
  absl::Status status;
  auto alloc = [&]<typename U>(Buffer<U>& b, size_t n, MemoryTier tier, const std::string& what) {
    if (!status.ok() || n == 0) return;
    auto r = Buffer<U>::Create(dev, n, tier, what);
    if (r.ok()) {
      b = std::move(*r);
    } else {
      status = r.status();
    }
  };
  // Chunk buffers on the device; the store in its tier.
  auto chunk = [&]<typename U>(Buffer<U>& b, size_t n, const char* what) {
    alloc(b, n, MemoryTier::kDevice, absl::StrCat("FPDT chunk of ", B, "x", c, " tokens: ", what));
  };
  auto keep = [&](Buffer<T>& b, size_t n, const std::string& what) {
    alloc(b, n, store, absl::StrCat("FPDT store for ", B, "x", Tn, " tokens: ", what));
  };
  for (auto [b, n, what] : std::initializer_list<std::tuple<Buffer<T>*, size_t, const char*>>{
           {&f.x, R * C, "layer input"},
           {&f.ln1, R * C, "norm"},
           {&f.ln1_mean, ln ? R : 0, "norm mean"},
           {&f.ln1_rstd, R, "norm rstd"},
           {&f.q, R * QKV, "qkv"},
           {&f.qh, P > 1 ? Rh * QKVh : 0, "head-sharded qkv"},
           {&f.kv[0], Rh * QKVh, "key/value prefetch"},
           {&f.kv[1], Rh * QKVh, "key/value prefetch"},
           {&f.o, R * A, "attention output"},
           {&f.oh, P > 1 ? Rh * Ah : 0, "head-sharded attention output"},
           {&f.lse, Rh * NH, "attention lse"},
           {&f.o2, Rh * Ah, "attention pair output"},
           {&f.lse2, Rh * NH, "attention pair lse"},
           {&f.proj, R * C, "projection"},
           {&f.mid, R * C, "attention residual"},
           {&f.ln2, R * C, "ln2"},
           {&f.ln2_mean, ln ? R : 0, "ln2 mean"},
           {&f.ln2_rstd, R, "ln2 rstd"},
           {&f.fc, R * fc, "mlp input projection"},
           {&f.act, R * F, "mlp activation"},
           {&f.out, R * C, "layer output"},
           {&f.logits, R * V, "logits"},
           {&f.probs, R * V, "probabilities"},
           {&f.losses, R, "losses"},
           {&f.dlogits, R * V, "logits gradient"},
           {&f.dy, R * C, "output gradient"},
           {&f.dln, R * C, "gradient scratch"},
           {&f.dtmp, R * C, "gradient scratch"},
           {&f.dfc, R * fc, "mlp gradient"},
           {&f.dact, R * F, "mlp activation gradient"},
           {&f.datty, R * A, "attention output gradient"},
           {&f.kvj, Rh * QKVh, "key/value chunk"},
           {&f.dkv, Rh * QKVh, "key/value gradient"},
           {&f.cos, rope ? size_t(c) * d.HS / 2 : 0, "rope cos rows"},
           {&f.sin, rope ? size_t(c) * d.HS / 2 : 0, "rope sin rows"},
       })
    chunk(*b, n, what);
  for (int s = 0; s < 2; ++s) {
    chunk(f.sq[s], Rh * QKVh, "query prefetch");
    chunk(f.so[s], Rh * Ah, "output prefetch");
    chunk(f.slse[s], Rh * NH, "lse prefetch");
    chunk(f.sdo[s], Rh * Ah, "output gradient prefetch");
    chunk(f.sdq[s], Rh * QKVh, "query gradient prefetch");
  }
  chunk(f.tok, R, "tokens");
  chunk(f.tgt, R, "targets");
  chunk(f.pos, R, "positions");
  f.xs.resize(d.L + 1);
  for (int l = 0; l <= d.L; ++l) keep(f.xs[l], N * C, absl::StrCat("layer ", l, " input"));
  keep(f.hqkv, Nh * QKVh, "qkv chunks");
  keep(f.ho, Nh * Ah, "attention output chunks");
  if (P > 1) keep(f.hol, N * A, "attention output chunks (local)");
  keep(f.hlse, Nh * NH, "attention lse chunks");
  keep(f.hdo, Nh * Ah, "attention output gradient chunks");
  keep(f.hdq, Nh * QKVh, "query gradient chunks");
  keep(f.hdx, N * C, "input gradient");
  keep(f.rope_cos, rope ? size_t(Tn) * P * d.HS / 2 : 0, "rope cos table");
  keep(f.rope_sin, rope ? size_t(Tn) * P * d.HS / 2 : 0, "rope sin table");
  if (status.ok() && P > 1) status = seq_->Reserve(B, c);
  if (!status.ok()) {
    f = FpdtState{};
    return status;
  }
  if (rope && d.longrope) {  // the whole sequence (P x Tn) picks LongRoPE's table once
    CopyRopeTables(f.rope_cos.data(), f.rope_sin.data(), UseLongRope(d, int64_t(Tn) * P - 1),
                   Tn * P);
  } else if (rope) {
    ops_->rope_tables(f.rope_cos.data(), f.rope_sin.data(), Tn * P, d.HS, d.rope_theta);
  }
  f.stream = dev.NewStream();
  B_ = B;
  T_ = Tn;
  return absl::OkStatus();
}

template <typename T>
uint64_t Transformer<T>::fpdt_store_bytes() const {
  const auto& f = fpdt_state_;
  uint64_t n = 0;
  for (const auto& x : f.xs) n += x.bytes();
  for (const Buffer<T>* b :
       {&f.hqkv, &f.ho, &f.hol, &f.hlse, &f.hdo, &f.hdq, &f.hdx, &f.rope_cos, &f.rope_sin})
    n += b->bytes();
  return n;
}

template <typename T>
void Transformer<T>::SeqOk(absl::Status st) {
  if (seq_status_.ok() && !st.ok()) seq_status_ = std::move(st);
}

template <typename T>
void Transformer<T>::FpdtGather(int i, int B, int Tn) {
  auto& f = fpdt_state_;
  const int c = f.c, len = FpdtLen(i, Tn);
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < len; ++t) {
      const size_t src = size_t(b) * Tn + size_t(i) * c + t, dst = size_t(b) * len + t;
      f.tok[dst] = tokens_[src];
      f.tgt[dst] = targets_ != nullptr ? targets_[src] : -1;
      f.pos[dst] = seq_positions_.empty() ? i * c + t : seq_positions_[size_t(i) * c + t];
    }
  }
  if (!dims_.is_gpt2()) {  // a chunk's positions are contiguous
    const size_t half = dims_.HS / 2, off = size_t(f.pos[0]) * half;
    backend_.device->Copy(f.cos.data(), f.rope_cos.data() + off, len * half * sizeof(T));
    backend_.device->Copy(f.sin.data(), f.rope_sin.data() + off, len * half * sizeof(T));
  }
}

template <typename T>
void Transformer<T>::FpdtMlpIn(const T* p, int R) {
  auto& f = fpdt_state_;
  const auto& d = dims_;
  const int C = d.C, F = d.F, A = d.NH * d.HS;
  const bool g2 = d.is_gpt2();
  const WeightLayout wl = g2 ? WeightLayout::kInOut : WeightLayout::kOutIn;
  ops_->matmul_forward(f.proj.data(), f.o.data(), p + lo_.o_w, g2 ? p + lo_.o_b : nullptr, R, A, C,
                       wl);
  ops_->residual_forward(f.mid.data(), f.x.data(), f.proj.data(), size_t(R) * C);
  NormForward(f.ln2.data(), f.ln2_mean.data(), f.ln2_rstd.data(), f.mid.data(), p + lo_.ln2_w,
              g2 ? p + lo_.ln2_b : nullptr, R);
  if (g2) {
    ops_->matmul_forward(f.fc.data(), f.ln2.data(), p + lo_.fc_w, p + lo_.fc_b, R, C, F, wl);
    ops_->gelu_forward(f.act.data(), f.fc.data(), size_t(R) * F);
  } else {
    ops_->matmul_forward(f.fc.data(), f.ln2.data(), p + lo_.fc_w, static_cast<const T*>(nullptr), R,
                         C, 2 * F, wl);
    ops_->swiglu_forward(f.act.data(), f.fc.data(), R, F);
  }
}

template <typename T>
void Transformer<T>::LayerForwardFpdt(const T* p, int l, int B, int Tn, bool keep) {
  auto& f = fpdt_state_;
  const auto& d = dims_;
  Stream& s = *f.stream;
  Device& dev = *backend_.device;
  const int c = f.c, C = d.C, F = d.F, A = d.NH * d.HS, QKV = d.QKV(), P = f.P;
  const int nh = f.nh, nkv = f.nkv, QKVh = (nh + 2 * nkv) * d.HS, Ah = nh * d.HS;
  const bool g2 = d.is_gpt2();
  const WeightLayout wl = g2 ? WeightLayout::kInOut : WeightLayout::kOutIn;
  // Head-sharded views (P = 1: the local buffers themselves).
  T* qh = P > 1 ? f.qh.data() : f.q.data();
  T* oh = P > 1 ? f.oh.data() : f.o.data();
  uint64_t q_done = 0, o_done = 0, out_done = 0;  // the stores reading qh, oh/lse/o, f.out
  for (int i = 0; i < f.u; ++i) {
    const int len = FpdtLen(i, Tn), R = B * len, Rh = R * P;
    const size_t row = size_t(B) * i * c, rowh = row * P;
    FpdtGather(i, B, Tn);
    dev.Copy(f.x.data(), f.xs[l].data() + row * C, size_t(R) * C * sizeof(T));
    NormForward(f.ln1.data(), f.ln1_mean.data(), f.ln1_rstd.data(), f.x.data(), p + lo_.ln1_w,
                g2 ? p + lo_.ln1_b : nullptr, R);
    s.Wait(q_done);
    ops_->matmul_forward(f.q.data(), f.ln1.data(), p + lo_.qkv_w, g2 ? p + lo_.qkv_b : nullptr, R,
                         C, QKV, wl);
    if (!g2) ops_->rope_forward(f.q.data(), f.cos.data(), f.sin.data(), B, len, d.NH, d.NKV, d.HS);
    // Over the group: this rank's heads of the chunk's span (every rank's chunk i).
    if (P > 1) SeqOk(seq_->ScatterHeads(SequenceRows::kQkv, qh, f.q.data(), B, len));
    s.CopyAsync(f.hqkv.data() + rowh * QKVh, qh, size_t(Rh) * QKVh * sizeof(T));
    q_done = s.Record();
    s.Wait(o_done);
    // The diagonal pair, then every earlier key chunk (full length), prefetched.
    const int span = P * c, lenh = P * len;
    ops_->chunked_attention_pair_forward(oh, f.lse.data(), qh, lenh, i * span, qh, lenh, i * span,
                                         B, nh, nkv, d.HS);
    Pipelined(
        s, i,
        [&](int j, int slot) {
          s.CopyAsync(f.kv[slot].data(), f.hqkv.data() + size_t(B) * j * span * QKVh,
                      size_t(B) * span * QKVh * sizeof(T));
        },
        [&](int j, int slot) {
          ops_->chunked_attention_pair_forward(f.o2.data(), f.lse2.data(), qh, lenh, i * span,
                                               f.kv[slot].data(), span, j * span, B, nh, nkv, d.HS);
          ops_->attention_lse_merge(oh, f.lse.data(), f.o2.data(), f.lse2.data(), B, lenh, nh,
                                    d.HS);
        });
    if (P > 1) SeqOk(seq_->GatherHeads(SequenceRows::kAttnOut, f.o.data(), oh, B, len));
    if (keep) {
      s.CopyAsync(f.ho.data() + rowh * Ah, oh, size_t(Rh) * Ah * sizeof(T));
      s.CopyAsync(f.hlse.data() + rowh * nh, f.lse.data(), size_t(Rh) * nh * sizeof(T));
      if (P > 1) s.CopyAsync(f.hol.data() + row * A, f.o.data(), size_t(R) * A * sizeof(T));
      o_done = s.Record();
      continue;
    }
    FpdtMlpIn(p, R);
    ops_->matmul_forward(f.proj.data(), f.act.data(), p + lo_.proj_w, g2 ? p + lo_.proj_b : nullptr,
                         R, F, C, wl);
    s.Wait(out_done);
    ops_->residual_forward(f.out.data(), f.mid.data(), f.proj.data(), size_t(R) * C);
    s.CopyAsync(f.xs[l + 1].data() + row * C, f.out.data(), size_t(R) * C * sizeof(T));
    out_done = s.Record();
  }
  s.Synchronize();
}

template <typename T>
double Transformer<T>::ForwardFpdt(ParamSource<T>& src, const int32_t* tokens,
                                   const int32_t* targets, int B, int Tn) {
  TERN_CHECK(targets != nullptr) << "FPDT computes the loss chunk by chunk: it needs targets";
  const absl::Status reserved = Reserve(B, Tn);
  TERN_CHECK(reserved.ok()) << reserved;
  auto& f = fpdt_state_;
  const auto& d = dims_;
  Device& dev = *backend_.device;
  const int c = f.c, C = d.C, V = d.V;
  const bool g2 = d.is_gpt2();
  tokens_ = tokens;
  targets_ = targets;
  const uint64_t u0 = table_.units()[0].offset;
  const T* p0 = src.Acquire(0);
  for (int i = 0; i < f.u; ++i) {
    const int len = FpdtLen(i, Tn), R = B * len;
    FpdtGather(i, B, Tn);
    ops_->embedding_forward(f.x.data(), f.tok.data(), p0 + (wte_off_ - u0),
                            g2 ? p0 + (wpe_off_ - u0) : nullptr, B, len, C,
                            g2 ? f.pos.data() : nullptr);
    dev.Copy(f.xs[0].data() + size_t(B) * i * c * C, f.x.data(), size_t(R) * C * sizeof(T));
  }
  src.Release(0);
  for (int l = 0; l < d.L; ++l) {
    const T* p = src.Acquire(l + 1);
    LayerForwardFpdt(p, l, B, Tn, false);
    src.Release(l + 1);
  }
  const int hu = d.L + 1;
  const T* ph = src.Acquire(hu);
  const T* w = d.tied ? src.Acquire(0) + (wte_off_ - u0) : ph + head_off_;
  int count = 0;
  double sum = 0;
  for (int i = 0; i < f.u; ++i) {
    const int len = FpdtLen(i, Tn), R = B * len;
    FpdtGather(i, B, Tn);
    dev.Copy(f.x.data(), f.xs[d.L].data() + size_t(B) * i * c * C, size_t(R) * C * sizeof(T));
    NormForward(f.ln1.data(), f.ln1_mean.data(), f.ln1_rstd.data(), f.x.data(), ph + lnf_w_off_,
                g2 ? ph + lnf_b_off_ : nullptr, R);
    ops_->matmul_forward(f.logits.data(), f.ln1.data(), w, static_cast<const T*>(nullptr), R, C, V,
                         WeightLayout::kOutIn);
    count += ops_->crossentropy_softmax_forward(f.losses.data(), f.probs.data(), f.logits.data(),
                                                f.tgt.data(), R, V);
    for (int r = 0; r < R; ++r) sum += f.losses[r];
  }
  if (d.tied) src.Release(0);
  src.Release(hu);
  count_ = count;
  return count > 0 ? sum / count : 0.0;
}

template <typename T>
void Transformer<T>::BackwardFpdt(ParamSource<T>& src, float grad_scale) {
  auto& f = fpdt_state_;
  const auto& d = dims_;
  Device& dev = *backend_.device;
  Stream& s = *f.stream;
  const int B = B_, Tn = T_, c = f.c, C = d.C, F = d.F, V = d.V, A = d.NH * d.HS, QKV = d.QKV();
  const int P = f.P, nh = f.nh, nkv = f.nkv, QKVh = (nh + 2 * nkv) * d.HS, Ah = nh * d.HS;
  const int span = P * c;
  const size_t Nh = size_t(B) * Tn * P;
  const bool g2 = d.is_gpt2();
  const WeightLayout wl = g2 ? WeightLayout::kInOut : WeightLayout::kOutIn;
  auto bias = [g2](T* base, uint64_t off) { return g2 ? base + off : nullptr; };
  auto get = [&](Buffer<T>& dst, const Buffer<T>& from, size_t row, int R, int width) {
    dev.Copy(dst.data(), from.data() + row * width, size_t(R) * width * sizeof(T));
  };
  auto put = [&](Buffer<T>& to, const Buffer<T>& from, size_t row, int R, int width) {
    dev.Copy(to.data() + row * width, from.data(), size_t(R) * width * sizeof(T));
  };
  const uint64_t u0 = table_.units()[0].offset;
  const float dloss = count_ > 0 ? grad_scale / count_ : 0.0f;
  // The head, per chunk: d(x_L) into hdx.
  const int hu = d.L + 1;
  const T* ph = src.Acquire(hu);
  T* gh = src.Grads(hu);
  const T* w = d.tied ? src.Acquire(0) + (wte_off_ - u0) : ph + head_off_;
  T* gw = d.tied ? src.Grads(0) + (wte_off_ - u0) : gh + head_off_;
  for (int i = 0; i < f.u; ++i) {
    const int len = FpdtLen(i, Tn), R = B * len;
    const size_t row = size_t(B) * i * c;
    FpdtGather(i, B, Tn);
    get(f.x, f.xs[d.L], row, R, C);
    NormForward(f.ln1.data(), f.ln1_mean.data(), f.ln1_rstd.data(), f.x.data(), ph + lnf_w_off_,
                g2 ? ph + lnf_b_off_ : nullptr, R);
    ops_->matmul_forward(f.logits.data(), f.ln1.data(), w, static_cast<const T*>(nullptr), R, C, V,
                         WeightLayout::kOutIn);
    ops_->crossentropy_softmax_forward(f.losses.data(), f.probs.data(), f.logits.data(),
                                       f.tgt.data(), R, V);
    ops_->crossentropy_softmax_backward(f.dlogits.data(), dloss, f.probs.data(), f.tgt.data(), R,
                                        V);
    ops_->matmul_backward(f.dln.data(), gw, static_cast<T*>(nullptr), f.dlogits.data(),
                          f.ln1.data(), w, R, C, V, WeightLayout::kOutIn);
    NormBackward(f.dy.data(), gh + lnf_w_off_, g2 ? gh + lnf_b_off_ : nullptr, f.dln.data(),
                 f.x.data(), ph + lnf_w_off_, f.ln1_mean.data(), f.ln1_rstd.data(), R);
    put(f.hdx, f.dy, row, R, C);
  }
  if (d.tied) src.Release(0);
  src.Release(hu);
  src.GradsReady(hu);
  for (int l = d.L - 1; l >= 0; --l) {
    const T* p = src.Acquire(l + 1);
    T* g = src.Grads(l + 1);
    // 1. This layer's q/k/v, output and lse chunks again, into the store.
    LayerForwardFpdt(p, l, B, Tn, true);
    dev.Fill(f.hdq.data(), 0, Nh * QKVh * sizeof(T));
    // 2. Per chunk: the MLP and the output projection backward (recomputed from the layer
    //    input and the attention output); d(output) to hdo, d(residual) into hdx.
    for (int i = 0; i < f.u; ++i) {
      const int len = FpdtLen(i, Tn), R = B * len;
      const size_t row = size_t(B) * i * c;
      get(f.x, f.xs[l], row, R, C);
      get(f.o, P > 1 ? f.hol : f.ho, row, R, A);
      get(f.dy, f.hdx, row, R, C);
      FpdtMlpIn(p, R);
      ops_->matmul_backward(f.dact.data(), g + lo_.proj_w, bias(g, lo_.proj_b), f.dy.data(),
                            f.act.data(), p + lo_.proj_w, R, F, C, wl);
      if (g2) {
        ops_->gelu_backward(f.dfc.data(), f.dact.data(), f.fc.data(), size_t(R) * F);
        ops_->matmul_backward(f.dln.data(), g + lo_.fc_w, g + lo_.fc_b, f.dfc.data(), f.ln2.data(),
                              p + lo_.fc_w, R, C, F, wl);
      } else {
        ops_->swiglu_backward(f.dfc.data(), f.dact.data(), f.fc.data(), R, F);
        ops_->matmul_backward(f.dln.data(), g + lo_.fc_w, static_cast<T*>(nullptr), f.dfc.data(),
                              f.ln2.data(), p + lo_.fc_w, R, C, 2 * F, wl);
      }
      NormBackward(f.dtmp.data(), g + lo_.ln2_w, bias(g, lo_.ln2_b), f.dln.data(), f.mid.data(),
                   p + lo_.ln2_w, f.ln2_mean.data(), f.ln2_rstd.data(), R);
      ops_->residual_backward(f.dy.data(), static_cast<T*>(nullptr), f.dtmp.data(), size_t(R) * C);
      ops_->matmul_backward(f.datty.data(), g + lo_.o_w, bias(g, lo_.o_b), f.dy.data(), f.o.data(),
                            p + lo_.o_w, R, A, C, wl);
      if (P > 1) {  // d(output) for this rank's heads over the span
        SeqOk(seq_->ScatterHeads(SequenceRows::kAttnOut, f.o2.data(), f.datty.data(), B, len));
        put(f.hdo, f.o2, row * P, R * P, Ah);
      } else {
        put(f.hdo, f.datty, row, R, A);
      }
      put(f.hdx, f.dy, row, R, C);
    }
    // 3. Attention backward, outer loop over key chunks j: dK/dV of chunk j accumulate on the
    //    device over query chunks i >= j (prefetched with their output, lse, d(output) and the
    //    dQ so far, which goes back to the store). dQ of chunk j is complete after its own
    //    outer step, so chunk j's q/k/v projection backward runs then.
    for (int j = 0; j < f.u; ++j) {
      const int lenj = FpdtLen(j, Tn), Rj = B * lenj, Rjh = Rj * P;
      const size_t rowj = size_t(B) * j * c, rowjh = rowj * P;
      get(f.kvj, f.hqkv, rowjh, Rjh, QKVh);
      dev.Fill(f.dkv.data(), 0, size_t(Rjh) * QKVh * sizeof(T));
      Pipelined(
          s, f.u - j,
          [&](int k, int slot) {
            const int i = j + k, Rh = B * FpdtLen(i, Tn) * P;
            const size_t rowh = size_t(B) * i * span;
            auto fetch = [&](Buffer<T>& dst, const Buffer<T>& from, int width) {
              s.CopyAsync(dst.data(), from.data() + rowh * width, size_t(Rh) * width * sizeof(T));
            };
            fetch(f.sq[slot], f.hqkv, QKVh);
            fetch(f.so[slot], f.ho, Ah);
            fetch(f.slse[slot], f.hlse, nh);
            fetch(f.sdo[slot], f.hdo, Ah);
            fetch(f.sdq[slot], f.hdq, QKVh);
          },
          [&](int k, int slot) {
            const int i = j + k, lenh = FpdtLen(i, Tn) * P, Rh = B * lenh;
            ops_->chunked_attention_pair_backward(
                f.sdq[slot].data(), f.dkv.data(), f.sdo[slot].data(), f.so[slot].data(),
                f.slse[slot].data(), f.sq[slot].data(), lenh, i * span, f.kvj.data(), lenj * P,
                j * span, B, nh, nkv, d.HS);
            s.CopyAsync(f.hdq.data() + size_t(B) * i * span * QKVh, f.sdq[slot].data(),
                        size_t(Rh) * QKVh * sizeof(T));
          });
      s.Synchronize();
      // dq/dk/dv of chunk j: the q part from the store, the k/v parts from dkv; over the
      // group, back to this rank's tokens of every head.
      get(f.sdq[0], f.hdq, rowjh, Rjh, QKVh);
      ops_->residual_forward(f.dkv.data(), f.dkv.data(), f.sdq[0].data(), size_t(Rjh) * QKVh);
      T* dqkv = f.dkv.data();
      if (P > 1) {
        SeqOk(seq_->GatherHeads(SequenceRows::kQkv, f.q.data(), f.dkv.data(), B, lenj));
        dqkv = f.q.data();
      }
      FpdtGather(j, B, Tn);
      if (!g2) ops_->rope_backward(dqkv, f.cos.data(), f.sin.data(), B, lenj, d.NH, d.NKV, d.HS);
      get(f.x, f.xs[l], rowj, Rj, C);
      NormForward(f.ln1.data(), f.ln1_mean.data(), f.ln1_rstd.data(), f.x.data(), p + lo_.ln1_w,
                  g2 ? p + lo_.ln1_b : nullptr, Rj);
      ops_->matmul_backward(f.dln.data(), g + lo_.qkv_w, bias(g, lo_.qkv_b), dqkv, f.ln1.data(),
                            p + lo_.qkv_w, Rj, C, QKV, wl);
      NormBackward(f.dtmp.data(), g + lo_.ln1_w, bias(g, lo_.ln1_b), f.dln.data(), f.x.data(),
                   p + lo_.ln1_w, f.ln1_mean.data(), f.ln1_rstd.data(), Rj);
      get(f.dy, f.hdx, rowj, Rj, C);
      ops_->residual_backward(f.dy.data(), static_cast<T*>(nullptr), f.dtmp.data(), size_t(Rj) * C);
      put(f.hdx, f.dy, rowj, Rj, C);
    }
    src.Release(l + 1);
    src.GradsReady(l + 1);
  }
  src.Acquire(0);
  T* g0 = src.Grads(0);
  for (int i = 0; i < f.u; ++i) {
    const int len = FpdtLen(i, Tn), R = B * len;
    FpdtGather(i, B, Tn);
    get(f.dy, f.hdx, size_t(B) * i * c, R, C);
    ops_->embedding_backward(g0 + (wte_off_ - u0), g2 ? g0 + (wpe_off_ - u0) : nullptr, f.dy.data(),
                             f.tok.data(), B, len, C, g2 ? f.pos.data() : nullptr);
  }
  src.Release(0);
  src.GradsReady(0);
}

#define TERN_INSTANTIATE(T)                                                                    \
  template absl::Status Transformer<T>::ReserveFpdt(int, int);                                 \
  template uint64_t Transformer<T>::fpdt_store_bytes() const;                                  \
  template void Transformer<T>::FpdtGather(int, int, int);                                     \
  template void Transformer<T>::SeqOk(absl::Status);                                           \
  template void Transformer<T>::FpdtMlpIn(const T*, int);                                      \
  template void Transformer<T>::LayerForwardFpdt(const T*, int, int, int, bool);               \
  template double Transformer<T>::ForwardFpdt(ParamSource<T>&, const int32_t*, const int32_t*, \
                                              int, int);                                       \
  template void Transformer<T>::BackwardFpdt(ParamSource<T>&, float);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)

}  // namespace tern::model
