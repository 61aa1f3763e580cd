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
  const int c = std::min(fpdt_.chunk, Tn);
  f.c = c;
  f.u = (Tn + c - 1) / c;
  const size_t R = size_t(B) * c, N = size_t(B) * Tn, C = d.C, F = d.F, QKV = d.QKV(), V = d.V;
  const size_t A = size_t(d.NH) * d.HS, NH = d.NH, fc = d.is_gpt2() ? F : 2 * F;
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
           {&f.kv[0], R * QKV, "key/value prefetch"},
           {&f.kv[1], R * QKV, "key/value prefetch"},
           {&f.o, R * A, "attention output"},
           {&f.lse, R * NH, "attention lse"},
           {&f.o2, R * A, "attention pair output"},
           {&f.lse2, R * NH, "attention pair lse"},
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
           {&f.kvj, R * QKV, "key/value chunk"},
           {&f.dkv, R * QKV, "key/value gradient"},
           {&f.cos, rope ? size_t(c) * d.HS / 2 : 0, "rope cos rows"},
           {&f.sin, rope ? size_t(c) * d.HS / 2 : 0, "rope sin rows"},
       })
    chunk(*b, n, what);
  for (int s = 0; s < 2; ++s) {
    chunk(f.sq[s], R * QKV, "query prefetch");
    chunk(f.so[s], R * A, "output prefetch");
    chunk(f.slse[s], R * NH, "lse prefetch");
    chunk(f.sdo[s], R * A, "output gradient prefetch");
    chunk(f.sdq[s], R * QKV, "query gradient prefetch");
  }
  chunk(f.tok, R, "tokens");
  chunk(f.tgt, R, "targets");
  chunk(f.pos, R, "positions");
  f.xs.resize(d.L + 1);
  for (int l = 0; l <= d.L; ++l) keep(f.xs[l], N * C, absl::StrCat("layer ", l, " input"));
  keep(f.hqkv, N * QKV, "qkv chunks");
  keep(f.ho, N * A, "attention output chunks");
  keep(f.hlse, N * NH, "attention lse chunks");
  keep(f.hdo, N * A, "attention output gradient chunks");
  keep(f.hdq, N * QKV, "query gradient chunks");
  keep(f.hdx, N * C, "input gradient");
  keep(f.rope_cos, rope ? size_t(Tn) * d.HS / 2 : 0, "rope cos table");
  keep(f.rope_sin, rope ? size_t(Tn) * d.HS / 2 : 0, "rope sin table");
  if (!status.ok()) {
    f = FpdtState{};
    return status;
  }
  if (rope) ops_->rope_tables(f.rope_cos.data(), f.rope_sin.data(), Tn, d.HS, d.rope_theta);
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
       {&f.hqkv, &f.ho, &f.hlse, &f.hdo, &f.hdq, &f.hdx, &f.rope_cos, &f.rope_sin})
    n += b->bytes();
  return n;
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
      f.pos[dst] = i * c + t;
    }
  }
  if (!dims_.is_gpt2()) {
    const size_t half = dims_.HS / 2, off = size_t(i) * c * half;
    backend_.device->Copy(f.cos.data(), f.rope_cos.data() + off, len * half * sizeof(T));
    backend_.device->Copy(f.sin.data(), f.rope_sin.data() + off, len * half * sizeof(T));
  }
}

template <typename T>
void Transformer<T>::LayerForwardFpdt(const T* p, int l, int B, int Tn, bool keep) {
  auto& f = fpdt_state_;
  const auto& d = dims_;
  Stream& s = *f.stream;
  Device& dev = *backend_.device;
  const int c = f.c, C = d.C, F = d.F, A = d.NH * d.HS, QKV = d.QKV(), NH = d.NH;
  const bool g2 = d.is_gpt2();
  const WeightLayout wl = g2 ? WeightLayout::kInOut : WeightLayout::kOutIn;
  uint64_t q_done = 0, o_done = 0, out_done = 0;  // the stores reading f.q, f.o/lse, f.out
  for (int i = 0; i < f.u; ++i) {
    const int len = FpdtLen(i, Tn), R = B * len;
    const size_t row = size_t(B) * i * c;
    FpdtGather(i, B, Tn);
    dev.Copy(f.x.data(), f.xs[l].data() + row * C, size_t(R) * C * sizeof(T));
    NormForward(f.ln1.data(), f.ln1_mean.data(), f.ln1_rstd.data(), f.x.data(), p + lo_.ln1_w,
                g2 ? p + lo_.ln1_b : nullptr, R);
    s.Wait(q_done);
    ops_->matmul_forward(f.q.data(), f.ln1.data(), p + lo_.qkv_w, g2 ? p + lo_.qkv_b : nullptr, R,
                         C, QKV, wl);
    if (!g2) ops_->rope_forward(f.q.data(), f.cos.data(), f.sin.data(), B, len, NH, d.NKV, d.HS);
    s.CopyAsync(f.hqkv.data() + row * QKV, f.q.data(), size_t(R) * QKV * sizeof(T));
    q_done = s.Record();
    s.Wait(o_done);
    // The diagonal pair, then every earlier key chunk (full length c), prefetched.
    ops_->chunked_attention_pair_forward(f.o.data(), f.lse.data(), f.q.data(), len, i * c,
                                         f.q.data(), len, i * c, B, NH, d.NKV, d.HS);
    Pipelined(
        s, i,
        [&](int j, int slot) {
          s.CopyAsync(f.kv[slot].data(), f.hqkv.data() + size_t(B) * j * c * QKV,
                      size_t(B) * c * QKV * sizeof(T));
        },
        [&](int j, int slot) {
          ops_->chunked_attention_pair_forward(f.o2.data(), f.lse2.data(), f.q.data(), len, i * c,
                                               f.kv[slot].data(), c, j * c, B, NH, d.NKV, d.HS);
          ops_->attention_lse_merge(f.o.data(), f.lse.data(), f.o2.data(), f.lse2.data(), B, len,
                                    NH, d.HS);
        });
    if (keep) {
      s.CopyAsync(f.ho.data() + row * A, f.o.data(), size_t(R) * A * sizeof(T));
      s.CopyAsync(f.hlse.data() + row * NH, f.lse.data(), size_t(R) * NH * sizeof(T));
      o_done = s.Record();
      continue;
    }
    ops_->matmul_forward(f.proj.data(), f.o.data(), p + lo_.o_w, g2 ? p + lo_.o_b : nullptr, R, A,
                         C, wl);
    ops_->residual_forward(f.mid.data(), f.x.data(), f.proj.data(), size_t(R) * C);
    NormForward(f.ln2.data(), f.ln2_mean.data(), f.ln2_rstd.data(), f.mid.data(), p + lo_.ln2_w,
                g2 ? p + lo_.ln2_b : nullptr, R);
    if (g2) {
      ops_->matmul_forward(f.fc.data(), f.ln2.data(), p + lo_.fc_w, p + lo_.fc_b, R, C, F, wl);
      ops_->gelu_forward(f.act.data(), f.fc.data(), size_t(R) * F);
    } else {
      ops_->matmul_forward(f.fc.data(), f.ln2.data(), p + lo_.fc_w, static_cast<const T*>(nullptr),
                           R, C, 2 * F, wl);
      ops_->swiglu_forward(f.act.data(), f.fc.data(), R, F);
    }
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
  const int NH = d.NH;
  const size_t N = size_t(B) * Tn;
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
    dev.Fill(f.hdq.data(), 0, N * QKV * sizeof(T));
    // 2. Per chunk: the MLP and the output projection backward (recomputed from the layer
    //    input and the attention output); d(output) to hdo, d(residual) into hdx.
    for (int i = 0; i < f.u; ++i) {
      const int len = FpdtLen(i, Tn), R = B * len;
      const size_t row = size_t(B) * i * c;
      get(f.x, f.xs[l], row, R, C);
      get(f.o, f.ho, row, R, A);
      get(f.dy, f.hdx, row, R, C);
      ops_->matmul_forward(f.proj.data(), f.o.data(), p + lo_.o_w, g2 ? p + lo_.o_b : nullptr, R, A,
                           C, wl);
      ops_->residual_forward(f.mid.data(), f.x.data(), f.proj.data(), size_t(R) * C);
      NormForward(f.ln2.data(), f.ln2_mean.data(), f.ln2_rstd.data(), f.mid.data(), p + lo_.ln2_w,
                  g2 ? p + lo_.ln2_b : nullptr, R);
      if (g2) {
        ops_->matmul_forward(f.fc.data(), f.ln2.data(), p + lo_.fc_w, p + lo_.fc_b, R, C, F, wl);
        ops_->gelu_forward(f.act.data(), f.fc.data(), size_t(R) * F);
      } else {
        ops_->matmul_forward(f.fc.data(), f.ln2.data(), p + lo_.fc_w,
                             static_cast<const T*>(nullptr), R, C, 2 * F, wl);
        ops_->swiglu_forward(f.act.data(), f.fc.data(), R, F);
      }
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
      put(f.hdo, f.datty, row, R, A);
      put(f.hdx, f.dy, row, R, C);
    }
    // 3. Attention backward, outer loop over key chunks j: dK/dV of chunk j accumulate on the
    //    device over query chunks i >= j (prefetched with their output, lse, d(output) and the
    //    dQ so far, which goes back to the store). dQ of chunk j is complete after its own
    //    outer step, so chunk j's q/k/v projection backward runs then.
    for (int j = 0; j < f.u; ++j) {
      const int lenj = FpdtLen(j, Tn), Rj = B * lenj;
      const size_t rowj = size_t(B) * j * c;
      get(f.kvj, f.hqkv, rowj, Rj, QKV);
      dev.Fill(f.dkv.data(), 0, size_t(Rj) * QKV * sizeof(T));
      Pipelined(
          s, f.u - j,
          [&](int k, int slot) {
            const int i = j + k, R = B * FpdtLen(i, Tn);
            const size_t row = size_t(B) * i * c;
            s.CopyAsync(f.sq[slot].data(), f.hqkv.data() + row * QKV, size_t(R) * QKV * sizeof(T));
            s.CopyAsync(f.so[slot].data(), f.ho.data() + row * A, size_t(R) * A * sizeof(T));
            s.CopyAsync(f.slse[slot].data(), f.hlse.data() + row * NH, size_t(R) * NH * sizeof(T));
            s.CopyAsync(f.sdo[slot].data(), f.hdo.data() + row * A, size_t(R) * A * sizeof(T));
            s.CopyAsync(f.sdq[slot].data(), f.hdq.data() + row * QKV, size_t(R) * QKV * sizeof(T));
          },
          [&](int k, int slot) {
            const int i = j + k, len = FpdtLen(i, Tn), R = B * len;
            ops_->chunked_attention_pair_backward(
                f.sdq[slot].data(), f.dkv.data(), f.sdo[slot].data(), f.so[slot].data(),
                f.slse[slot].data(), f.sq[slot].data(), len, i * c, f.kvj.data(), lenj, j * c, B,
                NH, d.NKV, d.HS);
            s.CopyAsync(f.hdq.data() + size_t(B) * i * c * QKV, f.sdq[slot].data(),
                        size_t(R) * QKV * sizeof(T));
          });
      s.Synchronize();
      // dq/dk/dv of chunk j: the q part from the store, the k/v parts from dkv.
      get(f.sdq[0], f.hdq, rowj, Rj, QKV);
      ops_->residual_forward(f.dkv.data(), f.dkv.data(), f.sdq[0].data(), size_t(Rj) * QKV);
      FpdtGather(j, B, Tn);
      if (!g2)
        ops_->rope_backward(f.dkv.data(), f.cos.data(), f.sin.data(), B, lenj, NH, d.NKV, d.HS);
      get(f.x, f.xs[l], rowj, Rj, C);
      NormForward(f.ln1.data(), f.ln1_mean.data(), f.ln1_rstd.data(), f.x.data(), p + lo_.ln1_w,
                  g2 ? p + lo_.ln1_b : nullptr, Rj);
      ops_->matmul_backward(f.dln.data(), g + lo_.qkv_w, bias(g, lo_.qkv_b), f.dkv.data(),
                            f.ln1.data(), p + lo_.qkv_w, Rj, C, QKV, wl);
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
  template void Transformer<T>::LayerForwardFpdt(const T*, int, int, int, bool);               \
  template double Transformer<T>::ForwardFpdt(ParamSource<T>&, const int32_t*, const int32_t*, \
                                              int, int);                                       \
  template void Transformer<T>::BackwardFpdt(ParamSource<T>&, float);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)

}  // namespace tern::model
