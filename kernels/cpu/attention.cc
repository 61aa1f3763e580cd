// Causal self-attention with grouped-query heads.
// Parameter gradients accumulate (+=), activation gradients assign (=); attention has no
// parameters and assigns dqkv.
//
// Each (batch, query head) is processed in blocks of `block_rows` query rows [i0, i1):
// S = scale * Q[i0:i1] K[0:i1]^T (key columns past the block's last row are all masked and
// skipped), a fused causal softmax over each row, then O = P V[0:i1]. Within a block the
// entries above the diagonal are written as 0 so the P V product needs no mask.
// The per-block products run on detail::SmallGemm (register-blocked AVX-512; OpenBLAS spends
// most of its time packing at these sizes) or, with AttentionTuning::blas_gemm or head sizes
// above kMaxSmallHs, on OpenBLAS. Either way they are single-threaded: the parallelism is
// over (block, batch, head) tasks.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/attention_tuning.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/small_gemm.h"
#include "kernels/cpu/vec_math.h"

namespace tern::kernels {

namespace detail {
AttentionTuning& MutableAttentionTuning() {
  static AttentionTuning tuning;
  return tuning;
}
}  // namespace detail

namespace {

// Below this many multiply-adds (B*NH*T*T*HS / 2) attention runs on one thread.
constexpr double kParallelWork = 1 << 17;

double Work(int B, int Tn, int NH, int HS) { return 0.5 * B * NH * double(Tn) * Tn * HS; }

constexpr int kMaxSmallHs = 128;  // K^T blocks live on the stack: kMaxSmallHs x kKeyBlock
constexpr int kKeyBlock = 64;

// Views of one (batch, query head) inside the fused qkv tensor (row stride ld = QKV).
template <typename T>
struct HeadView {
  const T* q;
  const T* k;
  const T* v;
  int ld;
};

template <typename T>
HeadView<T> MakeHeadView(const T* qkv, int b, int h, int Tn, int NH, int NKV, int HS) {
  const int ld = (NH + 2 * NKV) * HS;
  const int kvh = h / (NH / NKV);
  const T* base = qkv + static_cast<size_t>(b) * Tn * ld;
  return {base + static_cast<size_t>(h) * HS, base + static_cast<size_t>(NH + kvh) * HS,
          base + static_cast<size_t>(NH + NKV + kvh) * HS, ld};
}

// The three product shapes of attention, on SmallGemm or BLAS.
template <typename T>
struct Products {
  bool blas;

  // C (m,n) = alpha * A (m,HS) @ Bk (n,HS)^T, all row-major with the given strides.
  void ABt(T* c, int ldc, T alpha, const T* a, int lda, const T* bk, int ldb, int m, int n,
           int HS) const {
    if (blas) {
      gemm(false, true, m, n, HS, alpha, a, lda, bk, ldb, T(0), c, ldc);
      return;
    }
    alignas(64) T kt[kMaxSmallHs * kKeyBlock];  // Bk block transposed: (HS, kKeyBlock)
    for (int j0 = 0; j0 < n; j0 += kKeyBlock) {
      const int nb = std::min(kKeyBlock, n - j0);
      for (int j = 0; j < nb; ++j) {
        const T* row = bk + static_cast<size_t>(j0 + j) * ldb;
        for (int x = 0; x < HS; ++x) kt[x * kKeyBlock + j] = row[x];
      }
      detail::SmallGemm(m, nb, HS, alpha, a, lda, 1, kt, kKeyBlock, false, c + j0, ldc);
    }
  }

  // C (m,w) = alpha * A (m,k) @ B (k,w)  (+ C when accumulate).
  void AB(T* c, int ldc, T alpha, bool accumulate, const T* a, int lda, const T* b, int ldb, int m,
          int w, int k) const {
    if (blas) {
      gemm(false, false, m, w, k, alpha, a, lda, b, ldb, accumulate ? T(1) : T(0), c, ldc);
    } else {
      detail::SmallGemm(m, w, k, alpha, a, lda, 1, b, ldb, accumulate, c, ldc);
    }
  }

  // C (n,w) = alpha * A^T @ B with A (m,n), B (m,w)  (+ C when accumulate).
  void AtB(T* c, int ldc, T alpha, bool accumulate, const T* a, int lda, const T* b, int ldb, int n,
           int w, int m) const {
    if (blas) {
      gemm(true, false, n, w, m, alpha, a, lda, b, ldb, accumulate ? T(1) : T(0), c, ldc);
    } else {
      detail::SmallGemm(n, w, m, alpha, a, 1, lda, b, ldb, accumulate, c, ldc);
    }
  }
};

template <typename T>
Products<T> MakeProducts(int HS) {
  return {detail::MutableAttentionTuning().blas_gemm || HS > kMaxSmallHs};
}

// In place: row[0..len) = softmax(row[0..len)); row[len..width) = 0.
template <typename T>
inline void CausalSoftmaxRow(T* row, int len, int width) {
  const T mx = detail::RowMax(row, len);
  const T sum = detail::ExpShiftSum(row, row, len, mx);
  detail::RowScale(row, len, T(1) / sum);
  std::fill(row + len, row + width, T(0));
}

// One query block [i0, i1) of one head: fills att rows i0..i1 (columns 0..i1) and out rows.
template <typename T>
void ForwardBlock(const Products<T>& prod, T* out, int ldo, T* att, const HeadView<T>& hv, int Tn,
                  int HS, int i0, int i1) {
  const int m = i1 - i0;
  const T scale = T(1) / std::sqrt(static_cast<T>(HS));
  T* a = att + static_cast<size_t>(i0) * Tn;
  prod.ABt(a, Tn, scale, hv.q + static_cast<size_t>(i0) * hv.ld, hv.ld, hv.k, hv.ld, m, i1, HS);
  for (int r = 0; r < m; ++r) CausalSoftmaxRow(a + static_cast<size_t>(r) * Tn, i0 + r + 1, i1);
  prod.AB(out + static_cast<size_t>(i0) * ldo, ldo, T(1), false, a, Tn, hv.v, hv.ld, m, HS, i1);
}

}  // namespace

template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int B, int Tn, int NH, int NKV, int HS) {
  const detail::AttentionTuning& tune = detail::MutableAttentionTuning();
  const int bq = std::max(1, tune.block_rows);
  const int nblocks = (Tn + bq - 1) / bq;
  const int ldo = NH * HS;
  const long heads = static_cast<long>(B) * NH;
  const bool per_head = tune.parallel != detail::AttentionParallel::kBlas;
  // Serial over tasks (kBlas) means multithreaded OpenBLAS inside each product.
  const Products<T> prod{MakeProducts<T>(HS).blas || !per_head};
  // With enough heads, one task per (batch, head) runs its blocks back to back, so K/V of
  // the head stay in cache; otherwise tasks are (query block, batch, head) for parallelism,
  // largest blocks first.
  const bool whole_heads = heads >= 4L * omp_get_max_threads();
  const long tasks = whole_heads ? heads : heads * nblocks;
  const bool par = tasks > 1 && Work(B, Tn, NH, HS) >= kParallelWork;
#pragma omp parallel for schedule(dynamic, 1) if (per_head && par)
  for (long task = 0; task < tasks; ++task) {
    const int bh = static_cast<int>(task % heads);
    const int b = bh / NH, h = bh % NH;
    const HeadView<T> hv = MakeHeadView(qkv, b, h, Tn, NH, NKV, HS);
    T* out_h = out + static_cast<size_t>(b) * Tn * ldo + static_cast<size_t>(h) * HS;
    T* att_h = att + static_cast<size_t>(bh) * Tn * Tn;
    const int first = whole_heads ? 0 : nblocks - 1 - static_cast<int>(task / heads);
    const int last = whole_heads ? nblocks - 1 : first;
    for (int blk = first; blk <= last; ++blk) {
      ForwardBlock(prod, out_h, ldo, att_h, hv, Tn, HS, blk * bq, std::min(Tn, (blk + 1) * bq));
    }
  }
}

// Backward runs at most this many threads, so scratch sized for it stays valid when the
// thread count is raised after the scratch was allocated (more threads than cores would only
// oversubscribe them).
int BackwardThreads() { return std::max(1, std::min(omp_get_max_threads(), omp_get_num_procs())); }

size_t attention_scratch_elems(int B, int Tn, int NH, int NKV, int HS, int threads) {
  const int bq = std::max(1, detail::MutableAttentionTuning().block_rows);
  const size_t per_thread = 2 * static_cast<size_t>(std::min(bq, Tn)) * Tn;
  const int slots = std::max({threads, omp_get_num_procs(), 1});
  return static_cast<size_t>(slots) * per_thread;
}

namespace {

// Backward of one query block of head h (query rows [i0, i1)), accumulating into the
// (already zeroed) dK/dV of its kv head. scratch holds 2 * bq * Tn elements.
template <typename T>
void BackwardBlock(const Products<T>& prod, T* dq, T* dk, T* dv, T* scratch, const T* dout, int ldo,
                   const T* att, const HeadView<T>& hv, int Tn, int HS, int i0, int i1) {
  const int m = i1 - i0, n = i1;
  const int ld = hv.ld;
  const T scale = T(1) / std::sqrt(static_cast<T>(HS));
  T* p = scratch;                                // (m, n) causal-masked probabilities
  T* ds = scratch + static_cast<size_t>(m) * n;  // (m, n) dP, then dS in place
  for (int r = 0; r < m; ++r) {
    const int len = i0 + r + 1;
    const T* src = att + static_cast<size_t>(i0 + r) * Tn;
    T* dst = p + static_cast<size_t>(r) * n;
    std::copy(src, src + len, dst);
    std::fill(dst + len, dst + n, T(0));
  }
  const T* dob = dout + static_cast<size_t>(i0) * ldo;
  prod.AtB(dv, ld, T(1), true, p, n, dob, ldo, n, HS, m);  // dV += P^T dO
  prod.ABt(ds, n, T(1), dob, ldo, hv.v, ld, m, n, HS);     // dP = dO V^T
  for (int r = 0; r < m; ++r) {
    const int len = i0 + r + 1;
    const T* pr = p + static_cast<size_t>(r) * n;
    T* dr = ds + static_cast<size_t>(r) * n;
    T dot = 0;
#pragma omp simd reduction(+ : dot)
    for (int j = 0; j < len; ++j) dot += pr[j] * dr[j];
#pragma omp simd
    for (int j = 0; j < len; ++j) dr[j] = pr[j] * (dr[j] - dot);
    std::fill(dr + len, dr + n, T(0));
  }
  // dQ = scale * dS K; dK += scale * dS^T Q.
  prod.AB(dq + static_cast<size_t>(i0) * ld, ld, scale, false, ds, n, hv.k, ld, m, HS, n);
  prod.AtB(dk, ld, scale, true, ds, n, hv.q + static_cast<size_t>(i0) * ld, ld, n, HS, m);
}

// All query heads of kv head `kvh` in batch b: they share (and accumulate into) dK/dV.
template <typename T>
void BackwardKvGroup(const Products<T>& prod, T* dqkv, T* scratch, const T* dout, const T* qkv,
                     const T* att, int b, int kvh, int Tn, int NH, int NKV, int HS, int bq) {
  const int ld = (NH + 2 * NKV) * HS;
  const int ldo = NH * HS;
  const int group = NH / NKV;
  T* base = dqkv + static_cast<size_t>(b) * Tn * ld;
  T* dk = base + static_cast<size_t>(NH + kvh) * HS;
  T* dv = base + static_cast<size_t>(NH + NKV + kvh) * HS;
  for (int t = 0; t < Tn; ++t) {
    std::fill(dk + static_cast<size_t>(t) * ld, dk + static_cast<size_t>(t) * ld + HS, T(0));
    std::fill(dv + static_cast<size_t>(t) * ld, dv + static_cast<size_t>(t) * ld + HS, T(0));
  }
  for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
    const HeadView<T> hv = MakeHeadView(qkv, b, h, Tn, NH, NKV, HS);
    T* dq = base + static_cast<size_t>(h) * HS;
    const T* dout_h = dout + static_cast<size_t>(b) * Tn * ldo + static_cast<size_t>(h) * HS;
    const T* att_h = att + (static_cast<size_t>(b) * NH + h) * Tn * Tn;
    for (int i0 = 0; i0 < Tn; i0 += bq) {
      BackwardBlock(prod, dq, dk, dv, scratch, dout_h, ldo, att_h, hv, Tn, HS, i0,
                    std::min(Tn, i0 + bq));
    }
  }
}

}  // namespace

// Parallel over (batch, kv head) so that the query heads sharing a kv head accumulate into
// its dK/dV on one thread (no races). Thread i uses scratch[i * 2*bq*Tn, ...), i below
// BackwardThreads() <= the slots attention_scratch_elems reserved.
template <typename T>
void attention_backward(T* dqkv, T* scratch, const T* dout, const T* qkv, const T* att, int B,
                        int Tn, int NH, int NKV, int HS) {
  const detail::AttentionTuning& tune = detail::MutableAttentionTuning();
  const Products<T> prod = MakeProducts<T>(HS);
  const int bq = std::max(1, tune.block_rows);
  const size_t per_thread = 2 * static_cast<size_t>(std::min(bq, Tn)) * Tn;
  const int tasks = B * NKV;
  const int max_threads = BackwardThreads();
  const int threads = std::min(max_threads, std::max(tasks, 1));
  bool per_head = tune.parallel == detail::AttentionParallel::kHeads;
  if (tune.parallel == detail::AttentionParallel::kAuto) {
    // With fewer groups than threads, one thread per group would leave cores idle: run the
    // groups one after another with multithreaded BLAS inside each product instead.
    per_head = tasks >= max_threads;
  }
  const Products<T> serial_prod{prod.blas || !per_head};
  const bool par = tasks > 1 && Work(B, Tn, NH, HS) >= kParallelWork;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (per_head && par)
  for (int task = 0; task < tasks; ++task) {
    T* s = scratch + static_cast<size_t>(omp_get_thread_num()) * per_thread;
    BackwardKvGroup(serial_prod, dqkv, s, dout, qkv, att, task / NKV, task % NKV, Tn, NH, NKV, HS,
                    bq);
  }
}

// ---- Chunked attention: online softmax over key blocks, memory linear in T ---------------
//
// Forward, per (batch, query head) and query block [i0, i1): for each key block [j0, j1) a
// query can see (key position <= query position), S = scale Q K^T, the running row maximum m
// and sum l are updated, the accumulated output rows are rescaled by exp(m_old - m_new) and
// P V is added; at the end out = acc / l and lse = m + log l. Backward (FlashAttention-2's
// order) recomputes P = exp(S - lse) per block: dV += P^T dO, dP = dO V^T,
// dS = P (dP - rowsum(dO o O)), dQ += scale dS K, dK += scale dS^T Q. No (T, T) matrix exists.

namespace {

constexpr int kChunkRows = 64;  // query rows per block (and key rows per block: kKeyBlock)

// Keys of block [j0, j0 + nb) that query row i sees: [0, len).
inline int VisibleKeys(int i, int q_offset, int j0, int k_offset, int nb) {
  return std::clamp(q_offset + i - (k_offset + j0) + 1, 0, nb);
}

template <typename T>
void ChunkedForwardBlock(const Products<T>& prod, T* out, int ldo, T* lse, const HeadView<T>& q,
                         const HeadView<T>& kv, int Tk, int HS, int i0, int i1, int q_offset,
                         int k_offset) {
  const int m = i1 - i0;
  const T scale = T(1) / std::sqrt(static_cast<T>(HS));
  alignas(64) T s[kChunkRows * kKeyBlock];
  T mx[kChunkRows], l[kChunkRows];
  for (int r = 0; r < m; ++r) {
    mx[r] = -std::numeric_limits<T>::infinity();
    l[r] = 0;
    std::fill(out + static_cast<size_t>(i0 + r) * ldo, out + static_cast<size_t>(i0 + r) * ldo + HS,
              T(0));
  }
  // The last key any row of the block sees.
  const int last_key = std::min(Tk - 1, q_offset + i1 - 1 - k_offset);
  for (int j0 = 0; j0 <= last_key; j0 += kKeyBlock) {
    const int nb = std::min(kKeyBlock, last_key + 1 - j0);
    prod.ABt(s, kKeyBlock, scale, q.q + static_cast<size_t>(i0) * q.ld, q.ld,
             kv.k + static_cast<size_t>(j0) * kv.ld, kv.ld, m, nb, HS);
    for (int r = 0; r < m; ++r) {
      T* row = s + static_cast<size_t>(r) * kKeyBlock;
      const int len = VisibleKeys(i0 + r, q_offset, j0, k_offset, nb);
      if (len == 0) {
        std::fill(row, row + nb, T(0));
        continue;
      }
      const T m_new = std::max(mx[r], detail::RowMax(row, len));
      const T sum = detail::ExpShiftSum(row, row, len, m_new);
      std::fill(row + len, row + nb, T(0));
      if (mx[r] != -std::numeric_limits<T>::infinity() && mx[r] != m_new) {
        const T alpha = detail::Exp(mx[r] - m_new);
        l[r] *= alpha;
        detail::RowScale(out + static_cast<size_t>(i0 + r) * ldo, HS, alpha);
      }
      l[r] += sum;
      mx[r] = m_new;
    }
    prod.AB(out + static_cast<size_t>(i0) * ldo, ldo, T(1), true, s, kKeyBlock,
            kv.v + static_cast<size_t>(j0) * kv.ld, kv.ld, m, HS, nb);
  }
  for (int r = 0; r < m; ++r) {
    if (l[r] > 0) {
      detail::RowScale(out + static_cast<size_t>(i0 + r) * ldo, HS, T(1) / l[r]);
      lse[i0 + r] = mx[r] + std::log(l[r]);
    } else {
      lse[i0 + r] = -std::numeric_limits<T>::infinity();  // sees no key: out stays 0
    }
  }
}

template <typename T>
void ChunkedBackwardBlock(const Products<T>& prod, T* dq, T* dk, T* dv, const T* dout, int ldo,
                          const T* out, const T* lse, const HeadView<T>& q, const HeadView<T>& kv,
                          int Tk, int HS, int i0, int i1, int q_offset, int k_offset) {
  const int m = i1 - i0;
  const T scale = T(1) / std::sqrt(static_cast<T>(HS));
  alignas(64) T p[kChunkRows * kKeyBlock];
  alignas(64) T ds[kChunkRows * kKeyBlock];
  T dsum[kChunkRows];
  for (int r = 0; r < m; ++r) {
    const T* o = out + static_cast<size_t>(i0 + r) * ldo;
    const T* g = dout + static_cast<size_t>(i0 + r) * ldo;
    T d = 0;
#pragma omp simd reduction(+ : d)
    for (int x = 0; x < HS; ++x) d += o[x] * g[x];
    dsum[r] = d;
  }
  const T* dob = dout + static_cast<size_t>(i0) * ldo;
  const int last_key = std::min(Tk - 1, q_offset + i1 - 1 - k_offset);
  for (int j0 = 0; j0 <= last_key; j0 += kKeyBlock) {
    const int nb = std::min(kKeyBlock, last_key + 1 - j0);
    const T* kb = kv.k + static_cast<size_t>(j0) * kv.ld;
    const T* vb = kv.v + static_cast<size_t>(j0) * kv.ld;
    prod.ABt(p, kKeyBlock, scale, q.q + static_cast<size_t>(i0) * q.ld, q.ld, kb, kv.ld, m, nb, HS);
    for (int r = 0; r < m; ++r) {
      T* row = p + static_cast<size_t>(r) * kKeyBlock;
      const int len = VisibleKeys(i0 + r, q_offset, j0, k_offset, nb);
      if (len > 0) detail::ExpShiftSum(row, row, len, lse[i0 + r]);
      std::fill(row + len, row + nb, T(0));
    }
    prod.AtB(dv + static_cast<size_t>(j0) * kv.ld, kv.ld, T(1), true, p, kKeyBlock, dob, ldo, nb,
             HS, m);                                                // dV += P^T dO
    prod.ABt(ds, kKeyBlock, T(1), dob, ldo, vb, kv.ld, m, nb, HS);  // dP = dO V^T
    for (int r = 0; r < m; ++r) {
      const T* pr = p + static_cast<size_t>(r) * kKeyBlock;
      T* dr = ds + static_cast<size_t>(r) * kKeyBlock;
      const T d = dsum[r];
#pragma omp simd
      for (int j = 0; j < nb; ++j) dr[j] = pr[j] * (dr[j] - d);
    }
    prod.AB(dq + static_cast<size_t>(i0) * q.ld, q.ld, scale, true, ds, kKeyBlock, kb, kv.ld, m, HS,
            nb);  // dQ += scale dS K
    prod.AtB(dk + static_cast<size_t>(j0) * kv.ld, kv.ld, scale, true, ds, kKeyBlock,
             q.q + static_cast<size_t>(i0) * q.ld, q.ld, nb, HS, m);  // dK += scale dS^T Q
  }
}

}  // namespace

template <typename T>
void chunked_attention_pair_forward(T* out, T* lse, const T* qkv_q, int Tq, int q_offset,
                                    const T* qkv_kv, int Tk, int k_offset, int B, int NH, int NKV,
                                    int HS) {
  const int nblocks = (Tq + kChunkRows - 1) / kChunkRows;
  const int ldo = NH * HS;
  const long heads = static_cast<long>(B) * NH;
  const Products<T> prod = MakeProducts<T>(HS);
  const long tasks = heads * nblocks;
  const bool par = tasks > 1 && Work(B, std::max(Tq, Tk), NH, HS) >= kParallelWork;
  // Tasks are (query block, batch, head), largest blocks first.
#pragma omp parallel for schedule(dynamic, 1) if (par)
  for (long task = 0; task < tasks; ++task) {
    const int bh = static_cast<int>(task % heads);
    const int b = bh / NH, h = bh % NH;
    const int blk = nblocks - 1 - static_cast<int>(task / heads);
    const HeadView<T> q = MakeHeadView(qkv_q, b, h, Tq, NH, NKV, HS);
    const HeadView<T> kv = MakeHeadView(qkv_kv, b, h, Tk, NH, NKV, HS);
    T* out_h = out + static_cast<size_t>(b) * Tq * ldo + static_cast<size_t>(h) * HS;
    T* lse_h = lse + static_cast<size_t>(bh) * Tq;
    ChunkedForwardBlock(prod, out_h, ldo, lse_h, q, kv, Tk, HS, blk * kChunkRows,
                        std::min(Tq, (blk + 1) * kChunkRows), q_offset, k_offset);
  }
}

template <typename T>
void chunked_attention_forward(T* out, T* lse, const T* qkv, int B, int Tn, int NH, int NKV,
                               int HS) {
  chunked_attention_pair_forward(out, lse, qkv, Tn, 0, qkv, Tn, 0, B, NH, NKV, HS);
}

template <typename T>
void attention_lse_merge(T* out, T* lse, const T* out2, const T* lse2, int B, int Tn, int NH,
                         int HS) {
  const int ldo = NH * HS;
  const long rows = static_cast<long>(B) * NH * Tn;
  const bool par = static_cast<size_t>(rows) * HS >= detail::kParallelElems;
  const T inf = std::numeric_limits<T>::infinity();
#pragma omp parallel for schedule(static) if (par)
  for (long r = 0; r < rows; ++r) {
    const long bh = r / Tn;
    const int t = static_cast<int>(r % Tn), b = static_cast<int>(bh / NH),
              h = static_cast<int>(bh % NH);
    const T a = lse[r], c = lse2[r];
    if (c == -inf) continue;  // the second part saw no key: nothing to add
    T* o = out + (static_cast<size_t>(b) * Tn + t) * ldo + static_cast<size_t>(h) * HS;
    const T* o2 = out2 + (static_cast<size_t>(b) * Tn + t) * ldo + static_cast<size_t>(h) * HS;
    if (a == -inf) {
      std::copy(o2, o2 + HS, o);
      lse[r] = c;
      continue;
    }
    const T m = std::max(a, c);
    const T wa = std::exp(a - m), wc = std::exp(c - m), sum = wa + wc;
    const T fa = wa / sum, fc = wc / sum;
#pragma omp simd
    for (int x = 0; x < HS; ++x) o[x] = fa * o[x] + fc * o2[x];
    lse[r] = m + std::log(sum);
  }
}

template <typename T>
void chunked_attention_pair_backward(T* dqkv_q, T* dqkv_kv, const T* dout, const T* out,
                                     const T* lse, const T* qkv_q, int Tq, int q_offset,
                                     const T* qkv_kv, int Tk, int k_offset, int B, int NH, int NKV,
                                     int HS) {
  const Products<T> prod = MakeProducts<T>(HS);
  const int ld = (NH + 2 * NKV) * HS;
  const int ldo = NH * HS;
  const int group = NH / NKV;
  const int tasks = B * NKV;
  const bool par = tasks > 1 && Work(B, std::max(Tq, Tk), NH, HS) >= kParallelWork;
  // Parallel over (batch, kv head): the query heads sharing a kv head accumulate into its
  // dK/dV on one thread (and each query head's dQ belongs to one kv head).
#pragma omp parallel for schedule(dynamic, 1) if (par)
  for (int task = 0; task < tasks; ++task) {
    const int b = task / NKV, kvh = task % NKV;
    T* qbase = dqkv_q + static_cast<size_t>(b) * Tq * ld;
    T* kvbase = dqkv_kv + static_cast<size_t>(b) * Tk * ld;
    T* dk = kvbase + static_cast<size_t>(NH + kvh) * HS;
    T* dv = kvbase + static_cast<size_t>(NH + NKV + kvh) * HS;
    for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
      const HeadView<T> q = MakeHeadView(qkv_q, b, h, Tq, NH, NKV, HS);
      const HeadView<T> kv = MakeHeadView(qkv_kv, b, h, Tk, NH, NKV, HS);
      T* dq = qbase + static_cast<size_t>(h) * HS;
      const size_t head_off = static_cast<size_t>(b) * Tq * ldo + static_cast<size_t>(h) * HS;
      const T* lse_h = lse + (static_cast<size_t>(b) * NH + h) * Tq;
      for (int i0 = 0; i0 < Tq; i0 += kChunkRows) {
        ChunkedBackwardBlock(prod, dq, dk, dv, dout + head_off, ldo, out + head_off, lse_h, q, kv,
                             Tk, HS, i0, std::min(Tq, i0 + kChunkRows), q_offset, k_offset);
      }
    }
  }
}

template <typename T>
void chunked_attention_backward(T* dqkv, const T* dout, const T* out, const T* lse, const T* qkv,
                                int B, int Tn, int NH, int NKV, int HS) {
  std::fill(dqkv, dqkv + static_cast<size_t>(B) * Tn * (NH + 2 * NKV) * HS, T(0));
  chunked_attention_pair_backward(dqkv, dqkv, dout, out, lse, qkv, Tn, 0, qkv, Tn, 0, B, NH, NKV,
                                  HS);
}

#define TERN_INSTANTIATE(T)                                                                        \
  template void chunked_attention_forward<T>(T*, T*, const T*, int, int, int, int, int);           \
  template void chunked_attention_pair_forward<T>(T*, T*, const T*, int, int, const T*, int, int,  \
                                                  int, int, int, int);                             \
  template void attention_lse_merge<T>(T*, T*, const T*, const T*, int, int, int, int);            \
  template void chunked_attention_pair_backward<T>(T*, T*, const T*, const T*, const T*, const T*, \
                                                   int, int, const T*, int, int, int, int, int,    \
                                                   int);                                           \
  template void chunked_attention_backward<T>(T*, const T*, const T*, const T*, const T*, int,     \
                                              int, int, int, int);                                 \
  template void attention_forward<T>(T*, T*, const T*, int, int, int, int, int);                   \
  template void attention_backward<T>(T*, T*, const T*, const T*, const T*, int, int, int, int,    \
                                      int);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)
#undef TERN_INSTANTIATE

}  // namespace tern::kernels
