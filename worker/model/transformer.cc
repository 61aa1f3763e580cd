#include "worker/model/transformer.h"

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/threads.h"
#include "kernels/cpu/wquant.h"
#include "worker/core/status.h"

namespace tern::model {

namespace k = tern::kernels;
using k::WeightLayout;

template <typename T>
Backend<T> CpuBackend() {
  return Backend<T>{&DefaultDevice(), &k::CpuOps<T>(),
                    std::is_same_v<T, float> ? &k::CpuQuantizedLinearOps() : nullptr};
}
template Backend<float> CpuBackend<float>();
template Backend<double> CpuBackend<double>();

template <typename T>
Transformer<T>::Transformer(const ModelDims& dims, Backend<T> backend)
    : dims_(dims), backend_(backend), ops_(backend.ops) {
  TERN_CHECK(backend_.device != nullptr && ops_ != nullptr) << "a model needs a device and ops";
  BuildTable();
}

template <typename T>
void Transformer<T>::BuildTable() {
  const auto& d = dims_;
  const int64_t C = d.C, V = d.V, F = d.F, QKV = d.QKV(), A = d.NH * d.HS;
  const int head_unit = d.L + 1;
  if (d.is_gpt2()) {
    wte_off_ = table_.Add("transformer.wte.weight", {V, C}, true, 0);
    wpe_off_ = table_.Add("transformer.wpe.weight", {d.max_T, C}, true, 0);
  } else {
    wte_off_ = table_.Add("model.embed_tokens.weight", {V, C}, true, 0);
  }
  for (int l = 0; l < d.L; ++l) {
    const int u = l + 1;
    uint64_t base;
    LayerOffsets o{};
    if (d.is_gpt2()) {
      const std::string p = absl::StrCat("transformer.h.", l, ".");
      base = o.ln1_w = table_.Add(p + "ln_1.weight", {C}, false, u);
      o.ln1_b = table_.Add(p + "ln_1.bias", {C}, false, u);
      o.qkv_w = table_.Add(p + "attn.c_attn.weight", {C, QKV}, true, u);
      o.qkv_b = table_.Add(p + "attn.c_attn.bias", {QKV}, false, u);
      o.o_w = table_.Add(p + "attn.c_proj.weight", {A, C}, true, u);
      o.o_b = table_.Add(p + "attn.c_proj.bias", {C}, false, u);
      o.ln2_w = table_.Add(p + "ln_2.weight", {C}, false, u);
      o.ln2_b = table_.Add(p + "ln_2.bias", {C}, false, u);
      o.fc_w = table_.Add(p + "mlp.c_fc.weight", {C, F}, true, u);
      o.fc_b = table_.Add(p + "mlp.c_fc.bias", {F}, false, u);
      o.proj_w = table_.Add(p + "mlp.c_proj.weight", {F, C}, true, u);
      o.proj_b = table_.Add(p + "mlp.c_proj.bias", {C}, false, u);
    } else {
      const std::string p = absl::StrCat("model.layers.", l, ".");
      base = o.ln1_w = table_.Add(p + "input_layernorm.weight", {C}, false, u);
      // q|k|v (and gate|up) are adjacent in the flat buffer, so each pair is one fused GEMM;
      // phi-3 names the fused tensors directly.
      if (d.arch == Arch::kPhi3) {
        o.qkv_w = table_.Add(p + "self_attn.qkv_proj.weight", {QKV, C}, true, u);
      } else {
        o.qkv_w = table_.Add(p + "self_attn.q_proj.weight", {A, C}, true, u);
        table_.Add(p + "self_attn.k_proj.weight", {int64_t{d.NKV} * d.HS, C}, true, u);
        table_.Add(p + "self_attn.v_proj.weight", {int64_t{d.NKV} * d.HS, C}, true, u);
      }
      o.o_w = table_.Add(p + "self_attn.o_proj.weight", {C, A}, true, u);
      o.ln2_w = table_.Add(p + "post_attention_layernorm.weight", {C}, false, u);
      if (d.arch == Arch::kPhi3) {
        o.fc_w = table_.Add(p + "mlp.gate_up_proj.weight", {2 * F, C}, true, u);
      } else {
        o.fc_w = table_.Add(p + "mlp.gate_proj.weight", {F, C}, true, u);
        table_.Add(p + "mlp.up_proj.weight", {F, C}, true, u);
      }
      o.proj_w = table_.Add(p + "mlp.down_proj.weight", {C, F}, true, u);
    }
    // Store offsets relative to the unit start (every block has the same layout).
    auto rel = [base](uint64_t& x) { x -= base; };
    if (l == 0) {
      lo_ = o;
      for (uint64_t* x : {&lo_.ln1_w, &lo_.ln1_b, &lo_.qkv_w, &lo_.qkv_b, &lo_.o_w, &lo_.o_b,
                          &lo_.ln2_w, &lo_.ln2_b, &lo_.fc_w, &lo_.fc_b, &lo_.proj_w, &lo_.proj_b})
        rel(*x);
    }
  }
  const uint64_t head_base = d.is_gpt2()
                                 ? table_.Add("transformer.ln_f.weight", {C}, false, head_unit)
                                 : table_.Add("model.norm.weight", {C}, false, head_unit);
  lnf_w_off_ = 0;
  if (d.is_gpt2())
    lnf_b_off_ = table_.Add("transformer.ln_f.bias", {C}, false, head_unit) - head_base;
  if (!d.tied) head_off_ = table_.Add("lm_head.weight", {V, C}, true, head_unit) - head_base;
}

namespace {

// splitmix64: seeds one independent stream per parameter.
uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

template <typename T>
void Transformer<T>::InitParams(T* params, uint64_t seed) const {
  const double resid_std = dims_.init_std / std::sqrt(2.0 * dims_.L);
  const auto& entries = table_.entries();
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t i = 0; i < entries.size(); ++i) {
    const ParamEntry& e = entries[i];
    T* p = params + e.offset;
    const bool is_norm = !e.decay && e.shape.size() == 1 &&
                         (absl::StrContains(e.name, "norm") || absl::StrContains(e.name, "ln_"));
    if (is_norm && absl::EndsWith(e.name, ".weight")) {
      for (uint64_t j = 0; j < e.numel; ++j) p[j] = T(1);
      continue;
    }
    if (!e.decay) {
      std::memset(p, 0, e.numel * sizeof(T));
      continue;
    }
    double std = dims_.init_std;
    if (dims_.is_gpt2() && absl::EndsWith(e.name, "c_proj.weight")) std = resid_std;
    std::mt19937_64 rng(Mix(seed ^ Mix(i + 1)));
    const double two_pi = 6.283185307179586;
    for (uint64_t j = 0; j < e.numel; j += 2) {  // Box-Muller, two normals per draw
      double u1 = ((rng() >> 11) + 1.0) * 0x1.0p-53;
      double u2 = (rng() >> 11) * 0x1.0p-53;
      double r = std::sqrt(-2.0 * std::log(u1));
      p[j] = static_cast<T>(std * r * std::cos(two_pi * u2));
      if (j + 1 < e.numel) p[j + 1] = static_cast<T>(std * r * std::sin(two_pi * u2));
    }
  }
}

template <typename T>
absl::Status Transformer<T>::Reserve(int B, int Tn) {
  const auto& d = dims_;
  if (Tn > d.max_T) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence of ", Tn, " tokens > max_position_embeddings ", d.max_T));
  }
  if (B == B_ && Tn == T_) return absl::OkStatus();
  // Free the old shape first so the budget sees only the new one.
  B_ = T_ = 0;
  resid_.clear();
  acts_.clear();
  for (Buffer<T>* b : {&lnf_, &lnf_mean_, &lnf_rstd_, &logits_, &probs_, &losses_, &dx_, &dtmp_,
                       &dln_, &proj_, &dqkv_, &datty_, &dfc_, &dact_, &dlogits_})
    b->reset();
  FreeSequence();  // sequence parallelism (transformer_sequence.cc)
  fpdt_state_ = FpdtState{};
  if (fpdt_.chunk > 0) return ReserveFpdt(B, Tn);
  const size_t N = size_t(B) * Tn, C = d.C, F = d.F, A = size_t(d.NH) * d.HS;
  const size_t fc = d.is_gpt2() ? F : 2 * F;
  const bool ln = d.is_gpt2();
  Device& dev = *backend_.device;
  absl::Status status;
  auto alloc = [&](Buffer<T>& b, size_t n, const std::string& what) {
    if (!status.ok()) return;
    auto r = Buffer<T>::Create(dev, n, MemoryTier::kDevice,
                               absl::StrCat("activations for ", B, "x", Tn, " tokens: ", what));
    if (r.ok()) {
      b = std::move(*r);
    } else {
      status = r.status();
    }
  };
  resid_.resize(d.L + 1);
  for (int l = 0; l <= d.L; ++l) alloc(resid_[l], N * C, absl::StrCat("layer ", l, " input"));
  acts_.resize(recompute_ ? 1 : d.L);  // recompute: one shared set
  for (size_t l = 0; l < acts_.size(); ++l) {
    LayerActs& a = acts_[l];
    const std::string p = recompute_ ? "recomputed layer " : absl::StrCat("layer ", l, " ");
    alloc(a.ln1, N * C, p + "ln1");
    alloc(a.ln1_rstd, N, p + "ln1 rstd");
    if (ln) alloc(a.ln1_mean, N, p + "ln1 mean");
    alloc(a.qkv, N * d.QKV(), p + "qkv");
    alloc(a.lse, size_t(B) * d.NH * Tn, p + "attention lse");
    alloc(a.atty, N * A, p + "attention output");
    alloc(a.mid, N * C, p + "attention residual");
    alloc(a.ln2, N * C, p + "ln2");
    alloc(a.ln2_rstd, N, p + "ln2 rstd");
    if (ln) alloc(a.ln2_mean, N, p + "ln2 mean");
    alloc(a.fc, N * fc, p + "mlp input projection");
    alloc(a.act, N * F, p + "mlp activation");
  }
  alloc(lnf_, N * C, "final norm");
  alloc(lnf_rstd_, N, "final norm rstd");
  if (ln) alloc(lnf_mean_, N, "final norm mean");
  alloc(logits_, N * d.V, "logits");
  alloc(probs_, N * d.V, "probabilities");
  alloc(losses_, N, "losses");
  alloc(dx_, N * C, "gradient scratch");
  alloc(dtmp_, N * C, "gradient scratch");
  alloc(dln_, N * C, "gradient scratch");
  alloc(proj_, N * C, "projection scratch");
  alloc(dqkv_, N * d.QKV(), "qkv gradient");
  alloc(datty_, N * A, "attention output gradient");
  alloc(dfc_, N * fc, "mlp gradient");
  alloc(dact_, N * F, "mlp activation gradient");
  alloc(dlogits_, N * d.V, "logits gradient");
  if (!d.is_gpt2() && rope_cos_.empty()) {  // every position (a KV cache reaches past Tn)
    const size_t n = size_t(d.max_T) * d.HS / 2;
    alloc(rope_cos_, n, d.longrope ? "rope cos table (LongRoPE short factors)" : "rope cos table");
    alloc(rope_sin_, n, d.longrope ? "rope sin table (LongRoPE short factors)" : "rope sin table");
    if (d.longrope) {
      alloc(rope_cos_long_, n, "rope cos table (LongRoPE long factors)");
      alloc(rope_sin_long_, n, "rope sin table (LongRoPE long factors)");
      if (status.ok()) {
        CopyRopeTables(rope_cos_.data(), rope_sin_.data(), false, d.max_T);
        CopyRopeTables(rope_cos_long_.data(), rope_sin_long_.data(), true, d.max_T);
      }
    } else if (status.ok()) {
      ops_->rope_tables(rope_cos_.data(), rope_sin_.data(), d.max_T, d.HS, d.rope_theta);
    }
  }
  if (status.ok()) status = ReserveSequence(B, Tn);  // sequence parallelism
  if (!status.ok()) {
    FreeSequence();
    resid_.clear();
    acts_.clear();
    for (Buffer<T>* b : {&lnf_, &lnf_mean_, &lnf_rstd_, &logits_, &probs_, &losses_, &dx_, &dtmp_,
                         &dln_, &proj_, &dqkv_, &datty_, &dfc_, &dact_, &dlogits_, &rope_cos_,
                         &rope_sin_, &rope_cos_long_, &rope_sin_long_})
      b->reset();
    return status;
  }
  B_ = B;
  T_ = Tn;
  return absl::OkStatus();
}

template <typename T>
void Transformer<T>::CopyRopeTables(T* cos, T* sin, bool long_factors, int Tn) {
  std::vector<double> c, s;
  RopeTablesHost(dims_, long_factors, Tn, &c, &s);
  const std::vector<T> ct(c.begin(), c.end()), st(s.begin(), s.end());
  backend_.device->Copy(cos, ct.data(), ct.size() * sizeof(T));
  backend_.device->Copy(sin, st.data(), st.size() * sizeof(T));
}

template <typename T>
uint64_t Transformer<T>::activation_bytes() const {
  uint64_t n = 0;
  auto add = [&n](const auto& v) { n += v.bytes(); };
  for (const auto& r : resid_) add(r);
  for (const auto& a : acts_) {
    for (const auto* v : {&a.ln1, &a.ln1_mean, &a.ln1_rstd, &a.qkv, &a.lse, &a.atty, &a.mid, &a.ln2,
                          &a.ln2_mean, &a.ln2_rstd, &a.fc, &a.act})
      add(*v);
  }
  for (const auto* v : {&lnf_, &lnf_mean_, &lnf_rstd_, &logits_, &probs_, &losses_, &dx_, &dtmp_,
                        &dln_, &proj_, &dqkv_, &datty_, &dfc_, &dact_, &dlogits_, &rope_cos_,
                        &rope_sin_, &rope_cos_long_, &rope_sin_long_})
    add(*v);
  n += SequenceElems() * sizeof(T);  // sequence parallelism (transformer_sequence.cc)
  // FPDT: the chunk buffers, and the store when it is on the device.
  const auto& f = fpdt_state_;
  for (const auto* v :
       {&f.qh,     &f.oh,     &f.x,        &f.ln1,      &f.ln1_mean, &f.ln1_rstd, &f.q,
        &f.kv[0],  &f.kv[1],  &f.o,        &f.lse,      &f.o2,       &f.lse2,     &f.proj,
        &f.mid,    &f.ln2,    &f.ln2_mean, &f.ln2_rstd, &f.fc,       &f.act,      &f.out,
        &f.logits, &f.probs,  &f.losses,   &f.dlogits,  &f.dy,       &f.dln,      &f.dtmp,
        &f.dfc,    &f.dact,   &f.datty,    &f.kvj,      &f.dkv,      &f.cos,      &f.sin,
        &f.sq[0],  &f.sq[1],  &f.so[0],    &f.so[1],    &f.slse[0],  &f.slse[1],  &f.sdo[0],
        &f.sdo[1], &f.sdq[0], &f.sdq[1]})
    add(*v);
  for (const auto* v : {&f.tok, &f.tgt, &f.pos}) add(*v);
  if (!fpdt_.offload) n += fpdt_store_bytes();
  return n;
}

template <typename T>
void Transformer<T>::NormForward(T* out, T* mean, T* rstd, const T* inp, const T* w, const T* b,
                                 int N) {
  if (dims_.is_gpt2()) {
    ops_->layernorm_forward(out, mean, rstd, inp, w, b, N, dims_.C, dims_.norm_eps);
  } else {
    ops_->rmsnorm_forward(out, rstd, inp, w, N, dims_.C, dims_.norm_eps);
  }
}

template <typename T>
void Transformer<T>::NormBackward(T* dinp, T* dw, T* db, const T* dout, const T* inp, const T* w,
                                  const T* mean, const T* rstd, int N) {
  if (dims_.is_gpt2()) {
    ops_->layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, dims_.C);
  } else {
    ops_->rmsnorm_backward(dinp, dw, dout, inp, w, rstd, N, dims_.C);
  }
}

template class Transformer<float>;
template class Transformer<double>;

}  // namespace tern::model
