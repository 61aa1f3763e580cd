// Weight-only quantized inference (quantized.h): which matrices, quantizing them, and the model
// switching its products to them.
#include <cstring>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/wquant.h"
#include "worker/core/status.h"
#include "worker/model/quantized.h"
#include "worker/model/transformer.h"

namespace tern::model {

namespace k = tern::kernels;

uint64_t QuantizedWeights::bytes() const {
  uint64_t b = head.bytes();
  for (const auto& l : layers) b += l.qkv.bytes() + l.o.bytes() + l.fc.bytes() + l.proj.bytes();
  return b;
}

k::QuantizedMatrix& SlotOf(QuantizedWeights& q, const LinearWeight& w) {
  if (w.slot == LinearWeight::kHead) return q.head;
  QuantizedLayer& l = q.layers[w.layer];
  switch (w.slot) {
    case LinearWeight::kQkv:
      return l.qkv;
    case LinearWeight::kO:
      return l.o;
    case LinearWeight::kFc:
      return l.fc;
    default:
      return l.proj;
  }
}

const k::QuantizedMatrix& SlotOf(const QuantizedWeights& q, const LinearWeight& w) {
  return SlotOf(const_cast<QuantizedWeights&>(q), w);
}

k::QuantizedMatrix StackRows(std::vector<k::QuantizedMatrix> parts) {
  if (parts.size() == 1) return std::move(parts[0]);
  k::QuantizedMatrix out;
  out.format = parts[0].format;
  out.cols = parts[0].cols;
  out.group = parts[0].group;
  out.hi_stride = parts[0].hi_stride;
  out.lo_stride = parts[0].lo_stride;
  for (const auto& p : parts) out.rows += p.rows;
  out.hi = k::AlignedBytes(size_t(out.rows) * out.hi_stride);
  out.lo = k::AlignedBytes(size_t(out.rows) * out.lo_stride);
  size_t hi = 0, lo = 0;
  for (const auto& p : parts) {
    if (p.hi.size() > 0) std::memcpy(out.hi.data() + hi, p.hi.data(), p.hi.size());
    if (p.lo.size() > 0) std::memcpy(out.lo.data() + lo, p.lo.data(), p.lo.size());
    hi += p.hi.size();
    lo += p.lo.size();
    out.scales.insert(out.scales.end(), p.scales.begin(), p.scales.end());
  }
  return out;
}

template <typename T>
std::vector<LinearWeight> Transformer<T>::Linears() const {
  const auto& d = dims_;
  const auto& entries = table_.entries();
  const bool g2 = d.is_gpt2();
  const int A = d.NH * d.HS;
  auto find = [&](uint64_t offset) -> const ParamEntry* {
    for (const auto& e : entries)
      if (e.offset == offset) return &e;
    return nullptr;
  };
  std::vector<LinearWeight> out;
  for (int l = 0; l < d.L; ++l) {
    const uint64_t base = table_.units()[l + 1].offset;
    auto add = [&](LinearWeight::Slot slot, uint64_t off, int rows, int cols) {
      LinearWeight w;
      w.layer = l;
      w.slot = slot;
      w.transposed = g2;
      w.rows = rows;
      w.cols = cols;
      // The entries from `off` on whose rows make up the matrix (q, k, v; gate, up).
      int64_t have = 0;
      for (uint64_t o = base + off; have < rows;) {
        const ParamEntry* e = find(o);
        TERN_CHECK(e != nullptr) << "no parameter at offset " << o;
        w.entries.push_back(e);
        have += g2 ? e->shape[1] : e->shape[0];
        o += e->numel;
      }
      out.push_back(std::move(w));
    };
    add(LinearWeight::kQkv, lo_.qkv_w, d.QKV(), d.C);
    add(LinearWeight::kO, lo_.o_w, d.C, A);
    add(LinearWeight::kFc, lo_.fc_w, g2 ? d.F : 2 * d.F, d.C);
    add(LinearWeight::kProj, lo_.proj_w, d.C, d.F);
  }
  LinearWeight h;
  h.rows = d.V;
  h.cols = d.C;
  h.tied_head = d.tied;
  h.entries.push_back(d.tied ? find(wte_off_) : find(table_.units()[d.L + 1].offset + head_off_));
  out.push_back(std::move(h));
  return out;
}

template <typename T>
absl::StatusOr<QuantizedWeights> Transformer<T>::Quantize(const T* params,
                                                          k::WeightFormat format) const {
  if constexpr (!std::is_same_v<T, float>) {
    return absl::FailedPreconditionError("weight-only quantization is for float models");
  } else {
    QuantizedWeights q;
    q.format = format;
    q.layers.resize(dims_.L);
    for (const LinearWeight& w : Linears()) {
      std::vector<k::QuantizedMatrix> parts;
      for (const ParamEntry* e : w.entries) {
        const int rows = static_cast<int>(w.transposed ? e->shape[1] : e->shape[0]);
        parts.push_back(
            k::QuantizeWeights(format, params + e->offset, rows, w.cols,
                               w.transposed ? k::WeightLayout::kInOut : k::WeightLayout::kOutIn));
      }
      SlotOf(q, w) = StackRows(std::move(parts));
    }
    return q;
  }
}

template <typename T>
absl::Status Transformer<T>::set_quantized(const QuantizedWeights* q) {
  if (q == nullptr) {
    quant_ = nullptr;
    return absl::OkStatus();
  }
  if (!std::is_same_v<T, float> || backend_.qlinear == nullptr)
    return absl::FailedPreconditionError(
        absl::StrCat("the model's backend (", ops_->name(), ") has no quantized kernels"));
  if (fpdt_.chunk > 0 || seq_ != nullptr)
    return absl::FailedPreconditionError(
        "quantized weights serve inference; FPDT and sequence parallelism are for training");
  if (static_cast<int>(q->layers.size()) != dims_.L)
    return absl::InvalidArgumentError(absl::StrCat("quantized weights for ", q->layers.size(),
                                                   " layers; the model has ", dims_.L));
  for (const LinearWeight& w : Linears()) {
    const k::QuantizedMatrix& m = SlotOf(*q, w);
    if (m.rows != w.rows || m.cols != w.cols || m.format != q->format)
      return absl::InvalidArgumentError(
          absl::StrCat("quantized ", w.entries[0]->name, ": ", m.rows, "x", m.cols, " ",
                       k::WeightFormatName(m.format), "; the model needs ", w.rows, "x", w.cols,
                       " ", k::WeightFormatName(q->format)));
  }
  quant_ = q;
  return absl::OkStatus();
}

template <typename T>
void Transformer<T>::Linear(T* out, const T* in, const T* w, const T* b, int N, int C, int OC,
                            k::WeightLayout wl, const k::QuantizedMatrix* q) {
  if constexpr (std::is_same_v<T, float>) {
    if (q != nullptr) return backend_.qlinear->qlinear_forward(out, in, *q, b, N);
  }
  ops_->matmul_forward(out, in, w, b, N, C, OC, wl);
}

#define TERN_INSTANTIATE(T)                                                                     \
  template std::vector<LinearWeight> Transformer<T>::Linears() const;                           \
  template absl::StatusOr<QuantizedWeights> Transformer<T>::Quantize(const T*, k::WeightFormat) \
      const;                                                                                    \
  template absl::Status Transformer<T>::set_quantized(const QuantizedWeights*);                 \
  template void Transformer<T>::Linear(T*, const T*, const T*, const T*, int, int, int,         \
                                       k::WeightLayout, const k::QuantizedMatrix*);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)

}  // namespace tern::model
