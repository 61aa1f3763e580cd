#include "kernels/cuda/op_check.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <utility>

#include "kernels/cuda/launch.h"

namespace tern::kernels::cuda {
namespace {

constexpr double kTol = 2e-4;  // fp32 on both sides, different summation orders

// A device copy of a host vector (freed with it).
template <typename T>
class Dev {
 public:
  explicit Dev(const std::vector<T>& h) : n_(h.size()) {
    TERN_CUDA_CHECK(cudaMalloc(&p_, std::max<size_t>(n_, 1) * sizeof(T)));
    if (n_ > 0) TERN_CUDA_CHECK(cudaMemcpy(p_, h.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  ~Dev() { cudaFree(p_); }
  T* get() { return p_; }
  std::vector<T> Host() const {
    std::vector<T> h(n_);
    if (n_ > 0) TERN_CUDA_CHECK(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }

 private:
  T* p_ = nullptr;
  size_t n_;
};

std::vector<float> Random(size_t n, std::mt19937& rng, float lo = -1, float hi = 1) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

std::vector<int32_t> RandomInts(size_t n, int lo, int hi, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> d(lo, hi);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = d(rng);
  return v;
}

// Accumulates the comparison of outputs into a result.
class Compare {
 public:
  explicit Compare(OpCheckResult* r) : r_(r) { r_->tol = kTol; }
  void Floats(const char* what, const std::vector<float>& got, const std::vector<float>& want,
              double tol = kTol) {
    double scale = 1;
    for (float w : want)
      if (std::isfinite(w)) scale = std::max(scale, std::fabs(static_cast<double>(w)));
    double worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      double e;
      if (std::isinf(want[i]) || std::isinf(got[i])) {
        e = got[i] == want[i] ? 0 : INFINITY;
      } else if (std::isnan(got[i]) || std::isnan(want[i])) {
        e = INFINITY;
      } else {
        e = std::fabs(static_cast<double>(got[i]) - want[i]) / scale;
      }
      if (e > worst) {
        worst = e;
        at = i;
      }
    }
    Note(what, worst, tol, at, want.empty() ? 0.0 : want[at], got.empty() ? 0.0 : got[at]);
  }
  template <typename T>
  void Exact(const char* what, const std::vector<T>& got, const std::vector<T>& want) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      if (!(got[i] == want[i])) {
        if (bad++ == 0) first = i;
      }
    }
    if (bad > 0) {
      r_->ok = false;
      std::ostringstream s;
      s << what << ": " << bad << " of " << want.size() << " differ (first at " << first << ": "
        << +want[first] << " expected, " << +got[first] << " got); ";
      r_->detail += s.str();
    }
  }
  void Int(const char* what, long got, long want) {
    if (got != want) {
      r_->ok = false;
      r_->detail += std::string(what) + ": " + std::to_string(got) + " instead of " +
                    std::to_string(want) + "; ";
    }
  }
  void Double(const char* what, double got, double want, double rel) {
    const double e = std::fabs(got - want) / std::max(1.0, std::fabs(want));
    Note(what, e, rel, 0, want, got);
  }

 private:
  void Note(const char* what, double err, double tol, size_t at, double want, double got) {
    const bool bad = !(err <= tol);
    if (err > r_->max_err || std::isnan(err)) r_->max_err = err;
    if (bad || r_->detail.empty()) {
      std::ostringstream s;
      s << what << " err " << err << " at " << at << " (ref " << want << ", gpu " << got << "); ";
      if (bad) {
        r_->ok = false;
        r_->detail = s.str() + r_->detail;
      } else {
        r_->detail = s.str();
      }
    }
  }
  OpCheckResult* r_;
};

struct Args {
  const Ops<float>& gpu;
  const Ops<float>& ref;
  const QuantizeOps& gq;
  const QuantizeOps& rq;
  std::mt19937& rng;
  Compare& cmp;
};

using Check = std::function<void(Args&)>;

// Attention shapes: GQA with an odd length, and a head size that is not a power of two.
struct AttnShape {
  int B, T, NH, NKV, HS;
  size_t qkv() const { return size_t(B) * T * (NH + 2 * NKV) * HS; }
  size_t o() const { return size_t(B) * T * NH * HS; }
  size_t l() const { return size_t(B) * NH * T; }
};
constexpr AttnShape kAttn[] = {{2, 37, 4, 2, 32}, {1, 70, 3, 1, 80}};

void CheckAttentionForward(Args& a, const AttnShape& s) {
  auto qkv = Random(s.qkv(), a.rng);
  std::vector<float> out(s.o()), lse(s.l());
  a.ref.chunked_attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  Dev<float> dqkv(qkv), dout(std::vector<float>(s.o(), 7.0f)), dlse(std::vector<float>(s.l()));
  a.gpu.chunked_attention_forward(dout.get(), dlse.get(), dqkv.get(), s.B, s.T, s.NH, s.NKV, s.HS);
  a.cmp.Floats("out", dout.Host(), out);
  a.cmp.Floats("lse", dlse.Host(), lse);
}

void CheckAttentionBackward(Args& a, const AttnShape& s) {
  auto qkv = Random(s.qkv(), a.rng);
  auto g = Random(s.o(), a.rng);
  std::vector<float> out(s.o()), lse(s.l()), dqkv(s.qkv());
  a.ref.chunked_attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  a.ref.chunked_attention_backward(dqkv.data(), g.data(), out.data(), lse.data(), qkv.data(), s.B,
                                   s.T, s.NH, s.NKV, s.HS);
  Dev<float> d_qkv(qkv), d_g(g), d_out(out), d_lse(lse), d_dqkv(Random(s.qkv(), a.rng));
  a.gpu.chunked_attention_backward(d_dqkv.get(), d_g.get(), d_out.get(), d_lse.get(), d_qkv.get(),
                                   s.B, s.T, s.NH, s.NKV, s.HS);
  a.cmp.Floats("dqkv", d_dqkv.Host(), dqkv);
}

// Chunk pairs: the query chunk at q_offset against a key chunk at k_offset; with
// k_offset > q_offset the first rows see no key (lse -inf, out 0).
struct PairShape {
  int B, Tq, q_offset, Tk, k_offset, NH, NKV, HS;
};
constexpr PairShape kPairs[] = {{2, 23, 40, 29, 20, 4, 2, 32}, {1, 19, 10, 33, 20, 2, 1, 64}};

void CheckPairForward(Args& a, const PairShape& p) {
  const int QKV = (p.NH + 2 * p.NKV) * p.HS;
  auto q = Random(size_t(p.B) * p.Tq * QKV, a.rng);
  auto kv = Random(size_t(p.B) * p.Tk * QKV, a.rng);
  std::vector<float> out(size_t(p.B) * p.Tq * p.NH * p.HS), lse(size_t(p.B) * p.NH * p.Tq);
  a.ref.chunked_attention_pair_forward(out.data(), lse.data(), q.data(), p.Tq, p.q_offset,
                                       kv.data(), p.Tk, p.k_offset, p.B, p.NH, p.NKV, p.HS);
  Dev<float> dq(q), dkv(kv), dout(std::vector<float>(out.size(), 3.0f)),
      dlse(std::vector<float>(lse.size()));
  a.gpu.chunked_attention_pair_forward(dout.get(), dlse.get(), dq.get(), p.Tq, p.q_offset,
                                       dkv.get(), p.Tk, p.k_offset, p.B, p.NH, p.NKV, p.HS);
  a.cmp.Floats("out", dout.Host(), out);
  a.cmp.Floats("lse", dlse.Host(), lse);
}

void CheckPairBackward(Args& a, const PairShape& p) {
  const int QKV = (p.NH + 2 * p.NKV) * p.HS;
  const size_t nq = size_t(p.B) * p.Tq * QKV, nk = size_t(p.B) * p.Tk * QKV;
  auto q = Random(nq, a.rng);
  auto kv = Random(nk, a.rng);
  auto g = Random(size_t(p.B) * p.Tq * p.NH * p.HS, a.rng);
  std::vector<float> out(g.size()), lse(size_t(p.B) * p.NH * p.Tq);
  a.ref.chunked_attention_pair_forward(out.data(), lse.data(), q.data(), p.Tq, p.q_offset,
                                       kv.data(), p.Tk, p.k_offset, p.B, p.NH, p.NKV, p.HS);
  auto dq0 = Random(nq, a.rng);  // the pair backward accumulates
  auto dk0 = Random(nk, a.rng);
  Dev<float> d_q(q), d_kv(kv), d_g(g), d_out(out), d_lse(lse), d_dq(dq0), d_dk(dk0);
  a.ref.chunked_attention_pair_backward(dq0.data(), dk0.data(), g.data(), out.data(), lse.data(),
                                        q.data(), p.Tq, p.q_offset, kv.data(), p.Tk, p.k_offset,
                                        p.B, p.NH, p.NKV, p.HS);
  a.gpu.chunked_attention_pair_backward(d_dq.get(), d_dk.get(), d_g.get(), d_out.get(), d_lse.get(),
                                        d_q.get(), p.Tq, p.q_offset, d_kv.get(), p.Tk, p.k_offset,
                                        p.B, p.NH, p.NKV, p.HS);
  a.cmp.Floats("dqkv_q", d_dq.Host(), dq0);
  a.cmp.Floats("dqkv_kv", d_dk.Host(), dk0);
}

void CheckLseMerge(Args& a) {
  // One query chunk (positions 30..53) over two disjoint key chunks: keys 0..24 (every row sees
  // some) and keys 40..59 (rows before position 40 see none: lse2 = -inf there).
  const int B = 2, Tq = 24, NH = 4, NKV = 2, HS = 32, QKV = (NH + 2 * NKV) * HS;
  auto q = Random(size_t(B) * Tq * QKV, a.rng);
  auto k1 = Random(size_t(B) * 25 * QKV, a.rng);
  auto k2 = Random(size_t(B) * 20 * QKV, a.rng);
  const size_t no = size_t(B) * Tq * NH * HS, nl = size_t(B) * NH * Tq;
  std::vector<float> o1(no), l1(nl), o2(no), l2(nl);
  a.ref.chunked_attention_pair_forward(o1.data(), l1.data(), q.data(), Tq, 30, k1.data(), 25, 0, B,
                                       NH, NKV, HS);
  a.ref.chunked_attention_pair_forward(o2.data(), l2.data(), q.data(), Tq, 30, k2.data(), 20, 40, B,
                                       NH, NKV, HS);
  for (int pass = 0; pass < 2; ++pass) {
    // pass 1 merges the other way round: the first part is the one with -inf rows.
    std::vector<float> oa = pass == 0 ? o1 : o2, la = pass == 0 ? l1 : l2;
    const std::vector<float>& ob = pass == 0 ? o2 : o1;
    const std::vector<float>& lb = pass == 0 ? l2 : l1;
    Dev<float> d_oa(oa), d_la(la), d_ob(ob), d_lb(lb);
    a.ref.attention_lse_merge(oa.data(), la.data(), ob.data(), lb.data(), B, Tq, NH, HS);
    a.gpu.attention_lse_merge(d_oa.get(), d_la.get(), d_ob.get(), d_lb.get(), B, Tq, NH, HS);
    a.cmp.Floats("out", d_oa.Host(), oa);
    a.cmp.Floats("lse", d_la.Host(), la);
  }
}

const std::vector<std::pair<std::string, Check>>& Checks() {
  static const auto* checks = new std::vector<std::pair<std::string, Check>>{
      {"embedding_forward",
       [](Args& a) {
         const int B = 2, T = 7, C = 48, V = 50;
         auto tok = RandomInts(B * T, 0, V - 1, a.rng);
         auto pos = RandomInts(B * T, 0, 19, a.rng);
         auto wte = Random(size_t(V) * C, a.rng), wpe = Random(20 * C, a.rng);
         Dev<int32_t> dtok(tok), dpos(pos);
         Dev<float> dwte(wte), dwpe(wpe);
         for (int variant = 0; variant < 3; ++variant) {  // positions t; pos; no wpe
           const int32_t* p = variant == 1 ? pos.data() : nullptr;
           const int32_t* dp = variant == 1 ? dpos.get() : nullptr;
           std::vector<float> out(size_t(B) * T * C);
           a.ref.embedding_forward(out.data(), tok.data(), wte.data(),
                                   variant == 2 ? nullptr : wpe.data(), B, T, C, p);
           Dev<float> dout(std::vector<float>(out.size()));
           a.gpu.embedding_forward(dout.get(), dtok.get(), dwte.get(),
                                   variant == 2 ? nullptr : dwpe.get(), B, T, C, dp);
           a.cmp.Floats("out", dout.Host(), out);
         }
       }},
      {"embedding_backward",
       [](Args& a) {
         const int B = 2, T = 9, C = 40, V = 6;  // few tokens: repeated rows accumulate
         auto tok = RandomInts(B * T, 0, V - 1, a.rng);
         auto pos = RandomInts(B * T, 0, 11, a.rng);
         auto g = Random(size_t(B) * T * C, a.rng);
         for (int variant = 0; variant < 2; ++variant) {
           auto dwte = Random(size_t(V) * C, a.rng), dwpe = Random(12 * C, a.rng);
           Dev<int32_t> dtok(tok), dpos(pos);
           Dev<float> dg(g), ddwte(dwte), ddwpe(dwpe);
           const int32_t* p = variant == 1 ? pos.data() : nullptr;
           a.ref.embedding_backward(dwte.data(), dwpe.data(), g.data(), tok.data(), B, T, C, p);
           a.gpu.embedding_backward(ddwte.get(), ddwpe.get(), dg.get(), dtok.get(), B, T, C,
                                    variant == 1 ? dpos.get() : nullptr);
           a.cmp.Floats("dwte", ddwte.Host(), dwte);
           a.cmp.Floats("dwpe", ddwpe.Host(), dwpe);
         }
       }},
      {"layernorm_forward",
       [](Args& a) {
         const int N = 13, C = 1100;  // C above the 1024 threads of one block
         auto x = Random(size_t(N) * C, a.rng, -2, 3), w = Random(C, a.rng), b = Random(C, a.rng);
         std::vector<float> out(x.size()), mean(N), rstd(N);
         a.ref.layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(),
                                 N, C, 1e-5f);
         Dev<float> dx(x), dw(w), db(b), dout(out), dmean(mean), drstd(rstd);
         a.gpu.layernorm_forward(dout.get(), dmean.get(), drstd.get(), dx.get(), dw.get(), db.get(),
                                 N, C, 1e-5f);
         a.cmp.Floats("out", dout.Host(), out);
         a.cmp.Floats("mean", dmean.Host(), mean);
         a.cmp.Floats("rstd", drstd.Host(), rstd);
       }},
      {"layernorm_backward",
       [](Args& a) {
         const int N = 70, C = 96;
         auto x = Random(size_t(N) * C, a.rng), w = Random(C, a.rng), b = Random(C, a.rng);
         auto g = Random(x.size(), a.rng);
         std::vector<float> out(x.size()), mean(N), rstd(N);
         a.ref.layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(),
                                 N, C, 1e-5f);
         auto dw = Random(C, a.rng), dbias = Random(C, a.rng);
         std::vector<float> dx(x.size());
         Dev<float> d_x(x), d_w(w), d_g(g), d_mean(mean), d_rstd(rstd), d_dw(dw), d_db(dbias),
             d_dx(dx);
         a.ref.layernorm_backward(dx.data(), dw.data(), dbias.data(), g.data(), x.data(), w.data(),
                                  mean.data(), rstd.data(), N, C);
         a.gpu.layernorm_backward(d_dx.get(), d_dw.get(), d_db.get(), d_g.get(), d_x.get(),
                                  d_w.get(), d_mean.get(), d_rstd.get(), N, C);
         a.cmp.Floats("dinp", d_dx.Host(), dx);
         a.cmp.Floats("dweight", d_dw.Host(), dw);
         a.cmp.Floats("dbias", d_db.Host(), dbias);
       }},
      {"rmsnorm_forward",
       [](Args& a) {
         const int N = 17, C = 200;
         auto x = Random(size_t(N) * C, a.rng), w = Random(C, a.rng);
         std::vector<float> out(x.size()), rstd(N);
         a.ref.rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-6f);
         Dev<float> dx(x), dw(w), dout(out), drstd(rstd);
         a.gpu.rmsnorm_forward(dout.get(), drstd.get(), dx.get(), dw.get(), N, C, 1e-6f);
         a.cmp.Floats("out", dout.Host(), out);
         a.cmp.Floats("rstd", drstd.Host(), rstd);
       }},
      {"rmsnorm_backward",
       [](Args& a) {
         const int N = 70, C = 96;
         auto x = Random(size_t(N) * C, a.rng), w = Random(C, a.rng), g = Random(x.size(), a.rng);
         std::vector<float> out(x.size()), rstd(N), dx(x.size());
         a.ref.rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-6f);
         auto dw = Random(C, a.rng);
         Dev<float> d_x(x), d_w(w), d_g(g), d_rstd(rstd), d_dw(dw), d_dx(dx);
         a.ref.rmsnorm_backward(dx.data(), dw.data(), g.data(), x.data(), w.data(), rstd.data(), N,
                                C);
         a.gpu.rmsnorm_backward(d_dx.get(), d_dw.get(), d_g.get(), d_x.get(), d_w.get(),
                                d_rstd.get(), N, C);
         a.cmp.Floats("dinp", d_dx.Host(), dx);
         a.cmp.Floats("dweight", d_dw.Host(), dw);
       }},
      {"matmul_forward",
       [](Args& a) {
         const int N = 37, C = 72, OC = 50;
         auto x = Random(size_t(N) * C, a.rng), w = Random(size_t(OC) * C, a.rng);
         auto b = Random(OC, a.rng);
         for (WeightLayout layout : {WeightLayout::kOutIn, WeightLayout::kInOut}) {
           for (bool bias : {true, false}) {
             std::vector<float> out(size_t(N) * OC);
             a.ref.matmul_forward(out.data(), x.data(), w.data(), bias ? b.data() : nullptr, N, C,
                                  OC, layout);
             Dev<float> dx(x), dw(w), db(b), dout(std::vector<float>(out.size(), 5.0f));
             a.gpu.matmul_forward(dout.get(), dx.get(), dw.get(), bias ? db.get() : nullptr, N, C,
                                  OC, layout);
             a.cmp.Floats(layout == WeightLayout::kOutIn ? "out (OC,C)" : "out (C,OC)", dout.Host(),
                          out);
           }
         }
       }},
      {"matmul_backward",
       [](Args& a) {
         const int N = 37, C = 72, OC = 50;
         auto x = Random(size_t(N) * C, a.rng), w = Random(size_t(OC) * C, a.rng);
         auto g = Random(size_t(N) * OC, a.rng);
         for (WeightLayout layout : {WeightLayout::kOutIn, WeightLayout::kInOut}) {
           for (bool with_dinp : {true, false}) {
             std::vector<float> dx(x.size());
             auto dw = Random(w.size(), a.rng), db = Random(OC, a.rng);
             Dev<float> d_x(x), d_w(w), d_g(g), d_dx(dx), d_dw(dw), d_db(db);
             a.ref.matmul_backward(with_dinp ? dx.data() : nullptr, dw.data(),
                                   with_dinp ? db.data() : nullptr, g.data(), x.data(), w.data(), N,
                                   C, OC, layout);
             a.gpu.matmul_backward(with_dinp ? d_dx.get() : nullptr, d_dw.get(),
                                   with_dinp ? d_db.get() : nullptr, d_g.get(), d_x.get(),
                                   d_w.get(), N, C, OC, layout);
             a.cmp.Floats("dinp", d_dx.Host(), dx);
             a.cmp.Floats("dweight", d_dw.Host(), dw);
             a.cmp.Floats("dbias", d_db.Host(), db);
           }
         }
       }},
      {"rope_tables",
       [](Args& a) {
         const int T = 50, HS = 64;
         std::vector<float> c(size_t(T) * HS / 2), s(c.size());
         a.ref.rope_tables(c.data(), s.data(), T, HS, 10000.0f);
         Dev<float> dc(c), ds(s);
         a.gpu.rope_tables(dc.get(), ds.get(), T, HS, 10000.0f);
         a.cmp.Exact("cos", dc.Host(), c);
         a.cmp.Exact("sin", ds.Host(), s);
       }},
      {"rope_forward_backward",
       [](Args& a) {
         const int B = 2, T = 11, NH = 4, NKV = 2, HS = 16, maxT = 40;
         std::vector<float> c(size_t(maxT) * HS / 2), s(c.size());
         a.ref.rope_tables(c.data(), s.data(), maxT, HS, 10000.0f);
         auto pos = RandomInts(B * T, 0, maxT - 1, a.rng);
         Dev<float> dc(c), ds(s);
         Dev<int32_t> dpos(pos);
         for (int variant = 0; variant < 4; ++variant) {  // fwd, fwd+pos, bwd, bwd+pos
           auto x = Random(size_t(B) * T * (NH + 2 * NKV) * HS, a.rng);
           Dev<float> dx(x);
           const bool with_pos = variant % 2 == 1;
           if (variant < 2) {
             a.ref.rope_forward(x.data(), c.data(), s.data(), B, T, NH, NKV, HS,
                                with_pos ? pos.data() : nullptr);
             a.gpu.rope_forward(dx.get(), dc.get(), ds.get(), B, T, NH, NKV, HS,
                                with_pos ? dpos.get() : nullptr);
           } else {
             a.ref.rope_backward(x.data(), c.data(), s.data(), B, T, NH, NKV, HS,
                                 with_pos ? pos.data() : nullptr);
             a.gpu.rope_backward(dx.get(), dc.get(), ds.get(), B, T, NH, NKV, HS,
                                 with_pos ? dpos.get() : nullptr);
           }
           a.cmp.Floats("qkv", dx.Host(), x);
         }
       }},
      {"rope_forward_heads",
       [](Args& a) {
         const int B = 2, T = 9, NH = 4, NKV = 2, HS = 16, rows = 30, tables = 3;
         auto c = Random(size_t(tables) * rows * HS / 2, a.rng);
         auto s = Random(c.size(), a.rng);
         auto pos = RandomInts(B * T, 0, rows - 1, a.rng);
         auto head_table = RandomInts(B * (NH + NKV), 0, tables - 1, a.rng);
         Dev<float> dc(c), ds(s);
         Dev<int32_t> dpos(pos), dht(head_table);
         for (const bool with_pos : {false, true}) {
           auto x = Random(size_t(B) * T * (NH + 2 * NKV) * HS, a.rng);
           Dev<float> dx(x);
           a.ref.rope_forward_heads(x.data(), c.data(), s.data(), rows, head_table.data(), B, T, NH,
                                    NKV, HS, with_pos ? pos.data() : nullptr);
           a.gpu.rope_forward_heads(dx.get(), dc.get(), ds.get(), rows, dht.get(), B, T, NH, NKV,
                                    HS, with_pos ? dpos.get() : nullptr);
           a.cmp.Floats("qkv", dx.Host(), x);
         }
       }},
      {"chunked_attention_forward", [](Args& a) { CheckAttentionForward(a, kAttn[0]); }},
      {"chunked_attention_forward_hs80", [](Args& a) { CheckAttentionForward(a, kAttn[1]); }},
      {"chunked_attention_backward", [](Args& a) { CheckAttentionBackward(a, kAttn[0]); }},
      {"chunked_attention_backward_hs80", [](Args& a) { CheckAttentionBackward(a, kAttn[1]); }},
      {"chunked_attention_pair_forward",
       [](Args& a) {
         for (const PairShape& p : kPairs) CheckPairForward(a, p);
       }},
      {"chunked_attention_pair_backward",
       [](Args& a) {
         for (const PairShape& p : kPairs) CheckPairBackward(a, p);
       }},
      {"attention_lse_merge", CheckLseMerge},
      {"gelu",
       [](Args& a) {
         const size_t n = 3001;
         auto x = Random(n, a.rng, -4, 4), g = Random(n, a.rng);
         std::vector<float> out(n), dx(n);
         a.ref.gelu_forward(out.data(), x.data(), n);
         a.ref.gelu_backward(dx.data(), g.data(), x.data(), n);
         Dev<float> d_x(x), d_g(g), d_out(out), d_dx(dx);
         a.gpu.gelu_forward(d_out.get(), d_x.get(), n);
         a.gpu.gelu_backward(d_dx.get(), d_g.get(), d_x.get(), n);
         a.cmp.Floats("out", d_out.Host(), out);
         a.cmp.Floats("dinp", d_dx.Host(), dx);
       }},
      {"swiglu",
       [](Args& a) {
         const int N = 9, F = 77;
         auto x = Random(size_t(N) * 2 * F, a.rng, -3, 3), g = Random(size_t(N) * F, a.rng);
         std::vector<float> out(g.size()), dx(x.size());
         a.ref.swiglu_forward(out.data(), x.data(), N, F);
         a.ref.swiglu_backward(dx.data(), g.data(), x.data(), N, F);
         Dev<float> d_x(x), d_g(g), d_out(out), d_dx(dx);
         a.gpu.swiglu_forward(d_out.get(), d_x.get(), N, F);
         a.gpu.swiglu_backward(d_dx.get(), d_g.get(), d_x.get(), N, F);
         a.cmp.Floats("out", d_out.Host(), out);
         a.cmp.Floats("dinp", d_dx.Host(), dx);
       }},
      {"residual",
       [](Args& a) {
         const size_t n = 1000;
         auto x = Random(n, a.rng), y = Random(n, a.rng), g = Random(n, a.rng);
         auto da = Random(n, a.rng), db = Random(n, a.rng);
         std::vector<float> out(n);
         Dev<float> d_x(x), d_y(y), d_g(g), d_out(out), d_da(da), d_db(db);
         a.ref.residual_forward(out.data(), x.data(), y.data(), n);
         a.ref.residual_backward(da.data(), db.data(), g.data(), n);
         a.ref.residual_backward(da.data(), nullptr, g.data(), n);
         a.gpu.residual_forward(d_out.get(), d_x.get(), d_y.get(), n);
         a.gpu.residual_backward(d_da.get(), d_db.get(), d_g.get(), n);
         a.gpu.residual_backward(d_da.get(), nullptr, d_g.get(), n);
         a.cmp.Floats("out", d_out.Host(), out);
         a.cmp.Floats("da", d_da.Host(), da);
         a.cmp.Floats("db", d_db.Host(), db);
       }},
      {"crossentropy",
       [](Args& a) {
         const int N = 21, V = 1500;
         auto logits = Random(size_t(N) * V, a.rng, -5, 5);
         auto tgt = RandomInts(N, -1, V - 1, a.rng);  // some ignored rows
         tgt[0] = -100;
         tgt[1] = 3;
         std::vector<float> losses(N), probs(logits.size()), dl(logits.size());
         const int count = a.ref.crossentropy_softmax_forward(losses.data(), probs.data(),
                                                              logits.data(), tgt.data(), N, V);
         a.ref.crossentropy_softmax_backward(dl.data(), 0.25f, probs.data(), tgt.data(), N, V);
         Dev<float> d_logits(logits), d_losses(losses), d_probs(probs), d_dl(dl);
         Dev<int32_t> d_tgt(tgt);
         const int gcount = a.gpu.crossentropy_softmax_forward(d_losses.get(), d_probs.get(),
                                                               d_logits.get(), d_tgt.get(), N, V);
         a.gpu.crossentropy_softmax_backward(d_dl.get(), 0.25f, d_probs.get(), d_tgt.get(), N, V);
         a.cmp.Int("count", gcount, count);
         a.cmp.Floats("losses", d_losses.Host(), losses);
         a.cmp.Floats("probs", d_probs.Host(), probs);
         a.cmp.Floats("dlogits", d_dl.Host(), dl);
       }},
      {"adamw",
       [](Args& a) {
         const size_t n = 5000;
         auto p = Random(n, a.rng), g = Random(n, a.rng), m = Random(n, a.rng, -0.1f, 0.1f);
         auto v = Random(n, a.rng, 0, 0.01f);
         Dev<float> d_p(p), d_g(g), d_m(m), d_v(v);
         for (int64_t step = 1; step <= 3; ++step) {
           a.ref.adamw_update(p.data(), g.data(), m.data(), v.data(), n, 1e-3f, 0.9f, 0.95f, 1e-8f,
                              0.1f, step);
           a.gpu.adamw_update(d_p.get(), d_g.get(), d_m.get(), d_v.get(), n, 1e-3f, 0.9f, 0.95f,
                              1e-8f, 0.1f, step);
         }
         a.cmp.Floats("params", d_p.Host(), p, 1e-6);
         a.cmp.Floats("m", d_m.Host(), m, 1e-6);
         a.cmp.Floats("v", d_v.Host(), v, 1e-6);
       }},
      {"sum_squares_scale",
       [](Args& a) {
         const size_t n = (1 << 16) + 77;
         auto x = Random(n, a.rng);
         Dev<float> d_x(x);
         a.cmp.Double("sum_squares", a.gpu.sum_squares(d_x.get(), n),
                      a.ref.sum_squares(x.data(), n), 1e-9);
         a.ref.scale_inplace(x.data(), 0.37f, n);
         a.gpu.scale_inplace(d_x.get(), 0.37f, n);
         a.cmp.Exact("scaled", d_x.Host(), x);
       }},
  };
  return *checks;
}

// ---- Quantizers: bytes and scales must match exactly (the formats interoperate) ----------
struct QuantCase {
  size_t n, block;
};
constexpr QuantCase kQuant[] = {{12288, 256}, {8192, 2048}};

std::vector<float> QuantInput(const QuantCase& c, std::mt19937& rng) {
  auto x = Random(c.n, rng, -3, 3);
  std::fill(x.begin() + c.block, x.begin() + 2 * c.block, 0.0f);  // an all-zero block
  x[5] = 3.0f;                                                    // the block maximum exactly
  return x;
}

const std::vector<std::pair<std::string, Check>>& QuantChecks() {
  static const auto* checks = new std::vector<std::pair<std::string, Check>>{
      {"quantize_int8",
       [](Args& a) {
         for (const QuantCase& c : kQuant) {
           auto x = QuantInput(c, a.rng);
           std::vector<int8_t> q(c.n);
           std::vector<float> s(c.n / c.block), out(c.n);
           a.rq.quantize_int8(q.data(), s.data(), x.data(), c.n, c.block);
           Dev<float> d_x(x), d_s(s), d_out(out);
           Dev<int8_t> d_q(q), d_qref(q);
           a.gq.quantize_int8(d_q.get(), d_s.get(), d_x.get(), c.n, c.block);
           a.cmp.Exact("q", d_q.Host(), q);
           a.cmp.Exact("scales", d_s.Host(), s);
           // The CPU's bytes dequantized on the GPU.
           Dev<float> d_sref(s);
           a.rq.dequantize_int8(out.data(), q.data(), s.data(), c.n, c.block);
           a.gq.dequantize_int8(d_out.get(), d_qref.get(), d_sref.get(), c.n, c.block);
           a.cmp.Exact("dequantized", d_out.Host(), out);
         }
       }},
      {"quantize_int4",
       [](Args& a) {
         for (const QuantCase& c : kQuant) {
           auto x = QuantInput(c, a.rng);
           std::vector<uint8_t> q(c.n / 2);
           std::vector<float> s(c.n / c.block), out(c.n), acc = Random(c.n, a.rng);
           a.rq.quantize_int4(q.data(), s.data(), x.data(), c.n, c.block);
           Dev<float> d_x(x), d_s(s), d_out(out), d_acc(acc), d_sref(s);
           Dev<uint8_t> d_q(q), d_qref(q);
           a.gq.quantize_int4(d_q.get(), d_s.get(), d_x.get(), c.n, c.block);
           a.cmp.Exact("q", d_q.Host(), q);
           a.cmp.Exact("scales", d_s.Host(), s);
           a.rq.dequantize_int4(out.data(), q.data(), s.data(), c.n, c.block);
           a.gq.dequantize_int4(d_out.get(), d_qref.get(), d_sref.get(), c.n, c.block);
           a.cmp.Exact("dequantized", d_out.Host(), out);
           a.rq.dequantize_int4_add(acc.data(), q.data(), s.data(), c.n, c.block);
           a.gq.dequantize_int4_add(d_acc.get(), d_qref.get(), d_sref.get(), c.n, c.block);
           // A fused multiply-add on one side only changes the last bit.
           a.cmp.Floats("dequantized_add", d_acc.Host(), acc, 1e-6);
         }
       }},
      {"dequant_sum_requant_int4",
       [](Args& a) {
         const int m = 3;
         for (const QuantCase& c : kQuant) {
           std::vector<std::vector<uint8_t>> qs(m, std::vector<uint8_t>(c.n / 2));
           std::vector<std::vector<float>> ss(m, std::vector<float>(c.n / c.block));
           std::vector<std::unique_ptr<Dev<uint8_t>>> dqs;
           std::vector<std::unique_ptr<Dev<float>>> dss;
           std::vector<const uint8_t*> q_in, dq_in;
           std::vector<const float*> s_in, ds_in;
           for (int j = 0; j < m; ++j) {
             auto x = QuantInput(c, a.rng);
             a.rq.quantize_int4(qs[j].data(), ss[j].data(), x.data(), c.n, c.block);
             dqs.push_back(std::make_unique<Dev<uint8_t>>(qs[j]));
             dss.push_back(std::make_unique<Dev<float>>(ss[j]));
             q_in.push_back(qs[j].data());
             s_in.push_back(ss[j].data());
             dq_in.push_back(dqs.back()->get());
             ds_in.push_back(dss.back()->get());
           }
           std::vector<uint8_t> q(c.n / 2);
           std::vector<float> s(c.n / c.block);
           a.rq.dequant_sum_requant_int4(q.data(), s.data(), q_in.data(), s_in.data(), m, c.n,
                                         c.block);
           Dev<uint8_t> d_q(q);
           Dev<float> d_s(s);
           a.gq.dequant_sum_requant_int4(d_q.get(), d_s.get(), dq_in.data(), ds_in.data(), m, c.n,
                                         c.block);
           // The sums may differ in the last bit (a fused multiply-add on one side only): the
           // scales agree to rounding and each dequantized value to within one step.
           const auto gs = d_s.Host();
           a.cmp.Floats("scales", gs, s, 1e-6);
           std::vector<float> got(c.n), want(c.n);
           a.rq.dequantize_int4(want.data(), q.data(), s.data(), c.n, c.block);
           const auto gq = d_q.Host();
           a.rq.dequantize_int4(got.data(), gq.data(), gs.data(), c.n, c.block);
           float step = 0;
           for (float x : s) step = std::max(step, x);
           a.cmp.Floats("dequantized", got, want, 1.01 * step / std::max(1.0f, 7 * step));
         }
       }},
  };
  return *checks;
}

}  // namespace

std::vector<std::string> OpCheckNames() {
  std::vector<std::string> names;
  for (const auto& [name, fn] : Checks()) names.push_back(name);
  for (const auto& [name, fn] : QuantChecks()) names.push_back(name);
  return names;
}

OpCheckResult RunOpCheck(const std::string& name, const Ops<float>& gpu, const Ops<float>& ref,
                         const QuantizeOps& gpu_q, const QuantizeOps& ref_q) {
  OpCheckResult r;
  r.name = name;
  std::mt19937 rng(static_cast<uint32_t>(std::hash<std::string>()(name)));
  Compare cmp(&r);
  Args args{gpu, ref, gpu_q, ref_q, rng, cmp};
  for (const auto* list : {&Checks(), &QuantChecks()}) {
    for (const auto& [n, fn] : *list) {
      if (n == name) {
        fn(args);
        TERN_CUDA_CHECK(cudaDeviceSynchronize());
        return r;
      }
    }
  }
  r.ok = false;
  r.detail = "no such check";
  return r;
}

}  // namespace tern::kernels::cuda
