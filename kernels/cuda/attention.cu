// Causal GQA attention on chunk pairs (semantics: kernels/cpu/ops.h), fp32, straightforward
// tiled kernels (correctness first; no tensor cores):
// - forward: one warp per query row, the block's 8 rows sharing each tile of 32 keys and values
//   in shared memory; an online softmax keeps the row's max and sum, the output accumulates in
//   registers (lane l owns dimensions l, l + 32, ...); writes out and the row's lse.
// - backward: D = rowsum(dO * O) per row first; then dQ with one warp per query row over key
//   tiles, and dK/dV with one warp per key row over the query tiles of every query head of its
//   kv-head group (so each dK/dV row has one writer: no atomics, deterministic).
// Head sizes up to 256.
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/reduce.cuh"

namespace tern::kernels::cuda {
namespace {

constexpr int kWarps = 8;  // rows per block
constexpr int kTile = 32;  // keys (forward, dQ) or queries (dK/dV) per shared-memory tile
constexpr unsigned kFull = 0xffffffffu;

struct Shape {
  int Tq, q_offset, Tk, k_offset, NH, NKV, HS;
  float scale;
};

// Loads rows [r0, r0 + nr) of a head's columns (row stride ld) into tile (row stride HS + 1).
__device__ __forceinline__ void LoadTile(float* tile, const float* src, size_t ld, int r0, int nr,
                                         int HS) {
  for (int idx = threadIdx.x; idx < nr * HS; idx += blockDim.x) {
    const int r = idx / HS, c = idx % HS;
    tile[r * (HS + 1) + c] = src[static_cast<size_t>(r0 + r) * ld + c];
  }
}

template <int D>
__global__ void __launch_bounds__(kWarps * 32)
    ForwardKernel(float* out, float* lse, const float* qkv_q, const float* qkv_kv, Shape sh) {
  extern __shared__ float smem[];
  const int HS = sh.HS, ldk = HS + 1;
  const size_t ld = static_cast<size_t>(sh.NH + 2 * sh.NKV) * HS;
  const size_t ldo = static_cast<size_t>(sh.NH) * HS;
  float* ks = smem;
  float* vs = ks + kTile * ldk;
  float* qs = vs + kTile * ldk;
  const int bh = blockIdx.y, b = bh / sh.NH, h = bh % sh.NH, kvh = h / (sh.NH / sh.NKV);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int i0 = blockIdx.x * kWarps, i = i0 + warp;
  const bool active = i < sh.Tq;
  float* q = qs + warp * HS;
  const float* qrow = qkv_q + (static_cast<size_t>(b) * sh.Tq + (active ? i : 0)) * ld +
                      static_cast<size_t>(h) * HS;
  for (int d = lane; d < HS; d += 32) q[d] = active ? qrow[d] : 0.0f;
  const float* kbase =
      qkv_kv + static_cast<size_t>(b) * sh.Tk * ld + static_cast<size_t>(sh.NH + kvh) * HS;
  const float* vbase = kbase + static_cast<size_t>(sh.NKV) * HS;
  float acc[D];
#pragma unroll
  for (int x = 0; x < D; ++x) acc[x] = 0;
  float m = -INFINITY, l = 0;
  const int i_last = min(sh.Tq - 1, i0 + kWarps - 1);
  const int last_key = min(sh.Tk - 1, sh.q_offset + i_last - sh.k_offset);
  const int my_pos = sh.q_offset + i;
  for (int j0 = 0; j0 <= last_key; j0 += kTile) {
    const int nb = min(kTile, last_key + 1 - j0);
    __syncthreads();  // the previous tile is consumed (and q is written)
    LoadTile(ks, kbase, ld, j0, nb, HS);
    LoadTile(vs, vbase, ld, j0, nb, HS);
    __syncthreads();
    float s = -INFINITY;
    if (active && lane < nb && sh.k_offset + j0 + lane <= my_pos) {
      const float* kr = ks + lane * ldk;
      float dot = 0;
      for (int d = 0; d < HS; ++d) dot += q[d] * kr[d];
      s = dot * sh.scale;
    }
    const float tmax = WarpMax(s);
    if (tmax == -INFINITY) continue;  // warp-uniform: this row sees no key of the tile
    const float m_new = fmaxf(m, tmax);
    const float p = s == -INFINITY ? 0.0f : expf(s - m_new);
    const float alpha = m == -INFINITY ? 0.0f : expf(m - m_new);
    l = l * alpha + WarpSum(p);
#pragma unroll
    for (int x = 0; x < D; ++x) acc[x] *= alpha;
    for (int j = 0; j < nb; ++j) {
      const float pj = __shfl_sync(kFull, p, j);
      const float* vr = vs + j * ldk;
#pragma unroll
      for (int x = 0; x < D; ++x) {
        const int d = lane + 32 * x;
        if (d < HS) acc[x] += pj * vr[d];
      }
    }
    m = m_new;
  }
  if (!active) return;
  float* orow = out + (static_cast<size_t>(b) * sh.Tq + i) * ldo + static_cast<size_t>(h) * HS;
  const float inv = l > 0 ? 1.0f / l : 0.0f;
#pragma unroll
  for (int x = 0; x < D; ++x) {
    const int d = lane + 32 * x;
    if (d < HS) orow[d] = acc[x] * inv;
  }
  if (lane == 0) lse[static_cast<size_t>(bh) * sh.Tq + i] = l > 0 ? m + logf(l) : -INFINITY;
}

// D (B,NH,Tq) = rowsum(dout * out) per query row and head: one warp per row.
__global__ void RowDotKernel(float* dsum, const float* dout, const float* out, int Tq, int NH,
                             int HS, size_t rows) {
  const size_t r = blockIdx.x * size_t(kWarps) + (threadIdx.x >> 5);
  if (r >= rows) return;
  const int lane = threadIdx.x & 31;
  const size_t bh = r / Tq;
  const int i = static_cast<int>(r % Tq), b = static_cast<int>(bh / NH),
            h = static_cast<int>(bh % NH);
  const size_t off = (static_cast<size_t>(b) * Tq + i) * NH * HS + static_cast<size_t>(h) * HS;
  float s = 0;
  for (int d = lane; d < HS; d += 32) s += dout[off + d] * out[off + d];
  s = WarpSum(s);
  if (lane == 0) dsum[r] = s;
}

// dQ += scale * sum_j dS_ij K_j, one warp per query row; dS = P (dP - D), dP = dO V^T.
template <int D>
__global__ void __launch_bounds__(kWarps * 32)
    BackwardQKernel(float* dqkv_q, const float* dout, const float* lse, const float* dsum,
                    const float* qkv_q, const float* qkv_kv, Shape sh) {
  extern __shared__ float smem[];
  const int HS = sh.HS, ldk = HS + 1;
  const size_t ld = static_cast<size_t>(sh.NH + 2 * sh.NKV) * HS;
  const size_t ldo = static_cast<size_t>(sh.NH) * HS;
  float* ks = smem;
  float* vs = ks + kTile * ldk;
  float* qs = vs + kTile * ldk;
  float* dos = qs + kWarps * HS;
  const int bh = blockIdx.y, b = bh / sh.NH, h = bh % sh.NH, kvh = h / (sh.NH / sh.NKV);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int i0 = blockIdx.x * kWarps, i = i0 + warp;
  const bool active = i < sh.Tq;
  const int ic = active ? i : 0;
  float* q = qs + warp * HS;
  float* g = dos + warp * HS;
  const float* qrow =
      qkv_q + (static_cast<size_t>(b) * sh.Tq + ic) * ld + static_cast<size_t>(h) * HS;
  const float* grow =
      dout + (static_cast<size_t>(b) * sh.Tq + ic) * ldo + static_cast<size_t>(h) * HS;
  for (int d = lane; d < HS; d += 32) {
    q[d] = active ? qrow[d] : 0.0f;
    g[d] = active ? grow[d] : 0.0f;
  }
  const float row_lse = active ? lse[static_cast<size_t>(bh) * sh.Tq + i] : -INFINITY;
  const float row_d = active ? dsum[static_cast<size_t>(bh) * sh.Tq + i] : 0.0f;
  const bool live = active && row_lse != -INFINITY;
  const float* kbase =
      qkv_kv + static_cast<size_t>(b) * sh.Tk * ld + static_cast<size_t>(sh.NH + kvh) * HS;
  const float* vbase = kbase + static_cast<size_t>(sh.NKV) * HS;
  float acc[D];
#pragma unroll
  for (int x = 0; x < D; ++x) acc[x] = 0;
  const int i_last = min(sh.Tq - 1, i0 + kWarps - 1);
  const int last_key = min(sh.Tk - 1, sh.q_offset + i_last - sh.k_offset);
  const int my_pos = sh.q_offset + i;
  for (int j0 = 0; j0 <= last_key; j0 += kTile) {
    const int nb = min(kTile, last_key + 1 - j0);
    __syncthreads();
    LoadTile(ks, kbase, ld, j0, nb, HS);
    LoadTile(vs, vbase, ld, j0, nb, HS);
    __syncthreads();
    float ds = 0;
    if (live && lane < nb && sh.k_offset + j0 + lane <= my_pos) {
      const float* kr = ks + lane * ldk;
      const float* vr = vs + lane * ldk;
      float s = 0, dp = 0;
      for (int d = 0; d < HS; ++d) {
        s += q[d] * kr[d];
        dp += g[d] * vr[d];
      }
      const float p = expf(s * sh.scale - row_lse);
      ds = p * (dp - row_d);
    }
    for (int j = 0; j < nb; ++j) {
      const float dj = __shfl_sync(kFull, ds, j);
      const float* kr = ks + j * ldk;
#pragma unroll
      for (int x = 0; x < D; ++x) {
        const int d = lane + 32 * x;
        if (d < HS) acc[x] += dj * kr[d];
      }
    }
  }
  if (!live) return;
  float* dq = dqkv_q + (static_cast<size_t>(b) * sh.Tq + i) * ld + static_cast<size_t>(h) * HS;
#pragma unroll
  for (int x = 0; x < D; ++x) {
    const int d = lane + 32 * x;
    if (d < HS) dq[d] += sh.scale * acc[x];
  }
}

// dV_j += sum_i P_ij dO_i and dK_j += scale * sum_i dS_ij Q_i, one warp per key row, over the
// query rows of every query head sharing its kv head.
template <int D>
__global__ void __launch_bounds__(kWarps * 32)
    BackwardKvKernel(float* dqkv_kv, const float* dout, const float* lse, const float* dsum,
                     const float* qkv_q, const float* qkv_kv, Shape sh) {
  extern __shared__ float smem[];
  const int HS = sh.HS, ldk = HS + 1;
  const size_t ld = static_cast<size_t>(sh.NH + 2 * sh.NKV) * HS;
  const size_t ldo = static_cast<size_t>(sh.NH) * HS;
  float* qs = smem;
  float* gs = qs + kTile * ldk;
  float* ks = gs + kTile * ldk;
  float* vs = ks + kWarps * HS;
  float* lse_t = vs + kWarps * HS;
  float* d_t = lse_t + kTile;
  const int b = blockIdx.y / sh.NKV, kvh = blockIdx.y % sh.NKV, group = sh.NH / sh.NKV;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int j0b = blockIdx.x * kWarps, j = j0b + warp;
  const bool active = j < sh.Tk;
  const int jc = active ? j : 0;
  float* k = ks + warp * HS;
  float* v = vs + warp * HS;
  const float* krow =
      qkv_kv + (static_cast<size_t>(b) * sh.Tk + jc) * ld + static_cast<size_t>(sh.NH + kvh) * HS;
  const float* vrow = krow + static_cast<size_t>(sh.NKV) * HS;
  for (int d = lane; d < HS; d += 32) {
    k[d] = active ? krow[d] : 0.0f;
    v[d] = active ? vrow[d] : 0.0f;
  }
  float dk[D], dv[D];
#pragma unroll
  for (int x = 0; x < D; ++x) dk[x] = dv[x] = 0;
  const int key_pos = sh.k_offset + j;
  // The first query row that sees the block's first key.
  const int i_start = max(0, sh.k_offset + j0b - sh.q_offset);
  for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
    const float* qbase = qkv_q + static_cast<size_t>(b) * sh.Tq * ld + static_cast<size_t>(h) * HS;
    const float* gbase = dout + static_cast<size_t>(b) * sh.Tq * ldo + static_cast<size_t>(h) * HS;
    const size_t bh = static_cast<size_t>(b) * sh.NH + h;
    for (int i0 = i_start; i0 < sh.Tq; i0 += kTile) {
      const int nb = min(kTile, sh.Tq - i0);
      __syncthreads();
      LoadTile(qs, qbase, ld, i0, nb, HS);
      LoadTile(gs, gbase, ldo, i0, nb, HS);
      if (threadIdx.x < nb) {
        lse_t[threadIdx.x] = lse[bh * sh.Tq + i0 + threadIdx.x];
        d_t[threadIdx.x] = dsum[bh * sh.Tq + i0 + threadIdx.x];
      }
      __syncthreads();
      float p = 0, ds = 0;
      if (active && lane < nb && sh.q_offset + i0 + lane >= key_pos && lse_t[lane] != -INFINITY) {
        const float* qr = qs + lane * ldk;
        const float* gr = gs + lane * ldk;
        float s = 0, dp = 0;
        for (int d = 0; d < HS; ++d) {
          s += qr[d] * k[d];
          dp += gr[d] * v[d];
        }
        p = expf(s * sh.scale - lse_t[lane]);
        ds = p * (dp - d_t[lane]);
      }
      for (int r = 0; r < nb; ++r) {
        const float pr = __shfl_sync(kFull, p, r);
        const float dr = __shfl_sync(kFull, ds, r);
        const float* qr = qs + r * ldk;
        const float* gr = gs + r * ldk;
#pragma unroll
        for (int x = 0; x < D; ++x) {
          const int d = lane + 32 * x;
          if (d < HS) {
            dv[x] += pr * gr[d];
            dk[x] += dr * qr[d];
          }
        }
      }
    }
  }
  if (!active) return;
  float* dkrow =
      dqkv_kv + (static_cast<size_t>(b) * sh.Tk + j) * ld + static_cast<size_t>(sh.NH + kvh) * HS;
  float* dvrow = dkrow + static_cast<size_t>(sh.NKV) * HS;
#pragma unroll
  for (int x = 0; x < D; ++x) {
    const int d = lane + 32 * x;
    if (d < HS) {
      dkrow[d] += sh.scale * dk[x];
      dvrow[d] += dv[x];
    }
  }
}

// One warp per (b, h, t) row: (out, lse) := the merge of two parts.
__global__ void LseMergeKernel(float* out, float* lse, const float* out2, const float* lse2, int Tn,
                               int NH, int HS, size_t rows) {
  const size_t r = blockIdx.x * size_t(kWarps) + (threadIdx.x >> 5);
  if (r >= rows) return;
  const int lane = threadIdx.x & 31;
  const size_t bh = r / Tn;
  const int t = static_cast<int>(r % Tn), b = static_cast<int>(bh / NH),
            h = static_cast<int>(bh % NH);
  const float a = lse[r], c = lse2[r];
  if (c == -INFINITY) return;  // the second part saw no key
  const size_t off = (static_cast<size_t>(b) * Tn + t) * NH * HS + static_cast<size_t>(h) * HS;
  float* o = out + off;
  const float* o2 = out2 + off;
  if (a == -INFINITY) {
    for (int d = lane; d < HS; d += 32) o[d] = o2[d];
    __syncwarp();  // every lane has read lse[r] before lane 0 replaces it
    if (lane == 0) lse[r] = c;
    return;
  }
  const float m = fmaxf(a, c);
  const float wa = expf(a - m), wc = expf(c - m), sum = wa + wc;
  const float fa = wa / sum, fc = wc / sum;
  for (int d = lane; d < HS; d += 32) o[d] = fa * o[d] + fc * o2[d];
  __syncwarp();  // every lane has read lse[r] before lane 0 replaces it
  if (lane == 0) lse[r] = m + logf(sum);
}

int Slots(int HS) {
  if (HS <= 32) return 1;
  if (HS <= 64) return 2;
  if (HS <= 128) return 4;
  if (HS <= 256) return 8;
  std::fprintf(stderr, "kernels/cuda attention: head size %d above 256 is not supported\n", HS);
  std::abort();
}

// Launches kernel<D> for the head size's register slots, raising the shared-memory limit when
// the tiles need more than the default 48 KiB.
template <typename Launch>
void Dispatch(int HS, Launch&& launch) {
  switch (Slots(HS)) {
    case 1:
      launch(std::integral_constant<int, 1>());
      break;
    case 2:
      launch(std::integral_constant<int, 2>());
      break;
    case 4:
      launch(std::integral_constant<int, 4>());
      break;
    default:
      launch(std::integral_constant<int, 8>());
      break;
  }
}

template <typename Kernel>
void AllowSmem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024) {
    TERN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(bytes)));
  }
}

}  // namespace

void AttentionPairForward(float* out, float* lse, const float* qkv_q, int Tq, int q_offset,
                          const float* qkv_kv, int Tk, int k_offset, int B, int NH, int NKV,
                          int HS) {
  if (B == 0 || Tq == 0 || NH == 0) return;
  const Shape sh{Tq, q_offset, Tk, k_offset, NH, NKV, HS, 1.0f / sqrtf(static_cast<float>(HS))};
  const dim3 grid((Tq + kWarps - 1) / kWarps, B * NH);
  const size_t smem = (2 * kTile * (HS + 1) + kWarps * HS) * sizeof(float);
  Dispatch(HS, [&](auto d) {
    auto kernel = ForwardKernel<decltype(d)::value>;
    AllowSmem(kernel, smem);
    kernel<<<grid, kWarps * 32, smem>>>(out, lse, qkv_q, qkv_kv, sh);
    TERN_CUDA_LAUNCHED();
  });
}

void AttentionPairBackward(float* dqkv_q, float* dqkv_kv, const float* dout, const float* out,
                           const float* lse, const float* qkv_q, int Tq, int q_offset,
                           const float* qkv_kv, int Tk, int k_offset, int B, int NH, int NKV,
                           int HS) {
  if (B == 0 || Tq == 0 || Tk == 0 || NH == 0) return;
  const Shape sh{Tq, q_offset, Tk, k_offset, NH, NKV, HS, 1.0f / sqrtf(static_cast<float>(HS))};
  const size_t rows = static_cast<size_t>(B) * NH * Tq;
  float* dsum = nullptr;  // stream-ordered scratch: B*NH*Tq floats
  TERN_CUDA_CHECK(cudaMallocAsync(&dsum, rows * sizeof(float), 0));
  RowDotKernel<<<(rows + kWarps - 1) / kWarps, kWarps * 32>>>(dsum, dout, out, Tq, NH, HS, rows);
  TERN_CUDA_LAUNCHED();
  const size_t smem_q = (2 * kTile * (HS + 1) + 2 * kWarps * HS) * sizeof(float);
  const size_t smem_kv = (2 * kTile * (HS + 1) + 2 * kWarps * HS + 2 * kTile) * sizeof(float);
  Dispatch(HS, [&](auto d) {
    auto qk = BackwardQKernel<decltype(d)::value>;
    AllowSmem(qk, smem_q);
    qk<<<dim3((Tq + kWarps - 1) / kWarps, B * NH), kWarps * 32, smem_q>>>(dqkv_q, dout, lse, dsum,
                                                                          qkv_q, qkv_kv, sh);
    TERN_CUDA_LAUNCHED();
    auto kvk = BackwardKvKernel<decltype(d)::value>;
    AllowSmem(kvk, smem_kv);
    kvk<<<dim3((Tk + kWarps - 1) / kWarps, B * NKV), kWarps * 32, smem_kv>>>(
        dqkv_kv, dout, lse, dsum, qkv_q, qkv_kv, sh);
    TERN_CUDA_LAUNCHED();
  });
  TERN_CUDA_CHECK(cudaFreeAsync(dsum, 0));
}

void AttentionLseMerge(float* out, float* lse, const float* out2, const float* lse2, int B, int Tn,
                       int NH, int HS) {
  const size_t rows = static_cast<size_t>(B) * NH * Tn;
  if (rows == 0) return;
  LseMergeKernel<<<(rows + kWarps - 1) / kWarps, kWarps * 32>>>(out, lse, out2, lse2, Tn, NH, HS,
                                                                rows);
  TERN_CUDA_LAUNCHED();
}

}  // namespace tern::kernels::cuda
