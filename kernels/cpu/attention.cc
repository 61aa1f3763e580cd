// Causal self-attention with grouped-query heads over BLAS GEMMs.
// Parameter gradients accumulate (+=), activation gradients assign (=); attention has no
// parameters and assigns dqkv.
//
// Each (batch, query head) is processed in blocks of `block_rows` query rows [i0, i1):
// S = scale * Q[i0:i1] K[0:i1]^T (key columns past the block's last row are all masked and
// skipped), a fused causal softmax over each row, then O = P V[0:i1]. Within a block the
// entries above the diagonal are written as 0 so the P V GEMM needs no mask.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/attention_tuning.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

namespace tern::kernels {

namespace detail {
AttentionTuning& MutableAttentionTuning() {
  static AttentionTuning tuning;
  return tuning;
}
}  // namespace detail

namespace {

// Views of one (batch, query head) inside the fused qkv / out tensors.
template <typename T>
struct HeadView {
  const T* q;  // (T, HS), row stride ld
  const T* k;
  const T* v;
  int ld;  // QKV
};

template <typename T>
HeadView<T> MakeHeadView(const T* qkv, int b, int h, int Tn, int NH, int NKV, int HS) {
  const int ld = (NH + 2 * NKV) * HS;
  const int kvh = h / (NH / NKV);
  const T* base = qkv + static_cast<size_t>(b) * Tn * ld;
  return {base + static_cast<size_t>(h) * HS, base + static_cast<size_t>(NH + kvh) * HS,
          base + static_cast<size_t>(NH + NKV + kvh) * HS, ld};
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
void ForwardBlock(T* out, int ldo, T* att, const HeadView<T>& hv, int Tn, int HS, int i0,
                  int i1) {
  const int m = i1 - i0;
  const T scale = T(1) / std::sqrt(static_cast<T>(HS));
  T* a = att + static_cast<size_t>(i0) * Tn;
  gemm(false, true, m, i1, HS, scale, hv.q + static_cast<size_t>(i0) * hv.ld, hv.ld, hv.k,
       hv.ld, T(0), a, Tn);
  for (int r = 0; r < m; ++r) CausalSoftmaxRow(a + static_cast<size_t>(r) * Tn, i0 + r + 1, i1);
  gemm(false, false, m, HS, i1, T(1), a, Tn, hv.v, hv.ld, T(0),
       out + static_cast<size_t>(i0) * ldo, ldo);
}

}  // namespace

template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int B, int Tn, int NH, int NKV, int HS) {
  const detail::AttentionTuning& tune = detail::MutableAttentionTuning();
  const int bq = std::max(1, tune.block_rows);
  const int nblocks = (Tn + bq - 1) / bq;
  const int ldo = NH * HS;
  const long tasks = static_cast<long>(B) * NH * nblocks;
  const bool per_head = tune.parallel != detail::AttentionParallel::kBlas;
  const long heads = static_cast<long>(B) * NH;
  // Tasks are (query block, batch, head); later blocks have more keys, so hand them out
  // dynamically, largest first.
#pragma omp parallel for schedule(dynamic, 1) if (per_head && tasks > 1)
  for (long task = 0; task < tasks; ++task) {
    const int blk = nblocks - 1 - static_cast<int>(task / heads);
    const int bh = static_cast<int>(task % heads);
    const int b = bh / NH, h = bh % NH;
    const HeadView<T> hv = MakeHeadView(qkv, b, h, Tn, NH, NKV, HS);
    const int i0 = blk * bq, i1 = std::min(Tn, i0 + bq);
    ForwardBlock(out + static_cast<size_t>(b) * Tn * ldo + static_cast<size_t>(h) * HS, ldo,
                 att + static_cast<size_t>(bh) * Tn * Tn, hv, Tn, HS, i0, i1);
  }
}

size_t attention_scratch_elems(int B, int Tn, int NH, int NKV, int HS, int threads) {
  const int bq = std::max(1, detail::MutableAttentionTuning().block_rows);
  const size_t per_thread = 2 * static_cast<size_t>(std::min(bq, Tn)) * Tn;
  return static_cast<size_t>(std::max(threads, 1)) * per_thread;
}

namespace {

// Backward of one query block of head h (query rows [i0, i1)), accumulating into the
// (already zeroed) dK/dV of its kv head. scratch holds 2 * bq * Tn elements.
template <typename T>
void BackwardBlock(T* dq, T* dk, T* dv, T* scratch, const T* dout, int ldo, const T* att,
                   const HeadView<T>& hv, int Tn, int HS, int i0, int i1) {
  const int m = i1 - i0, n = i1;
  const T scale = T(1) / std::sqrt(static_cast<T>(HS));
  T* p = scratch;                          // (m, n) causal-masked probabilities
  T* ds = scratch + static_cast<size_t>(m) * n;  // (m, n) dP, then dS in place
  for (int r = 0; r < m; ++r) {
    const int len = i0 + r + 1;
    const T* src = att + static_cast<size_t>(i0 + r) * Tn;
    T* dst = p + static_cast<size_t>(r) * n;
    std::copy(src, src + len, dst);
    std::fill(dst + len, dst + n, T(0));
  }
  const T* dob = dout + static_cast<size_t>(i0) * ldo;
  gemm(true, false, n, HS, m, T(1), p, n, dob, ldo, T(1), dv, hv.ld);    // dV += P^T dO
  gemm(false, true, m, n, HS, T(1), dob, ldo, hv.v, hv.ld, T(0), ds, n);  // dP = dO V^T
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
  gemm(false, false, m, HS, n, scale, ds, n, hv.k, hv.ld, T(0),
       dq + static_cast<size_t>(i0) * hv.ld, hv.ld);
  gemm(true, false, n, HS, m, scale, ds, n, hv.q + static_cast<size_t>(i0) * hv.ld, hv.ld, T(1),
       dk, hv.ld);
}

// All query heads of kv head `kvh` in batch b: they share (and accumulate into) dK/dV.
template <typename T>
void BackwardKvGroup(T* dqkv, T* scratch, const T* dout, const T* qkv, const T* att, int b,
                     int kvh, int Tn, int NH, int NKV, int HS, int bq) {
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
      BackwardBlock(dq, dk, dv, scratch, dout_h, ldo, att_h, hv, Tn, HS, i0,
                    std::min(Tn, i0 + bq));
    }
  }
}

}  // namespace

// Parallel over (batch, kv head) so that the query heads sharing a kv head accumulate into
// its dK/dV on one thread (no races). Thread i uses scratch[i * 2*bq*Tn, ...): `threads`
// given to attention_scratch_elems must be at least the OpenMP thread count used here.
template <typename T>
void attention_backward(T* dqkv, T* scratch, const T* dout, const T* qkv, const T* att, int B,
                        int Tn, int NH, int NKV, int HS) {
  const detail::AttentionTuning& tune = detail::MutableAttentionTuning();
  const int bq = std::max(1, tune.block_rows);
  const size_t per_thread = 2 * static_cast<size_t>(std::min(bq, Tn)) * Tn;
  const int tasks = B * NKV;
  const int threads = omp_get_max_threads();
  bool per_head = tune.parallel == detail::AttentionParallel::kHeads;
  if (tune.parallel == detail::AttentionParallel::kAuto) {
    // With fewer groups than threads, one thread per group would leave cores idle: use
    // multithreaded BLAS inside each GEMM instead.
    per_head = tasks >= threads;
  }
#pragma omp parallel for schedule(dynamic, 1) if (per_head && tasks > 1)
  for (int task = 0; task < tasks; ++task) {
    T* s = scratch + static_cast<size_t>(omp_get_thread_num()) * per_thread;
    BackwardKvGroup(dqkv, s, dout, qkv, att, task / NKV, task % NKV, Tn, NH, NKV, HS, bq);
  }
}

#define TERN_INSTANTIATE(T)                                                              \
  template void attention_forward<T>(T*, T*, const T*, int, int, int, int, int);        \
  template void attention_backward<T>(T*, T*, const T*, const T*, const T*, int, int, int, \
                                      int, int);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)
#undef TERN_INSTANTIATE

}  // namespace tern::kernels
