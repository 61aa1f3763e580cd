// Ms-PoE in the Transformer (see ms_poe.h and transformer.h): the slot tables on the device,
// the per-sequence measurement of the slots and the per-head rotation.
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "worker/core/status.h"
#include "worker/model/transformer.h"

namespace tern::model {

template <typename T>
absl::Status Transformer<T>::set_ms_poe(const MsPoeOptions& o) {
  TERN_RETURN_IF_ERROR(ValidateMsPoe(o, dims_));
  if (fpdt_.chunk > 0 || seq_ != nullptr)
    return absl::InvalidArgumentError(
        "Ms-PoE is for inference: the model must run without FPDT and sequence parallelism");
  std::vector<double> c, s;
  MsPoeTablesHost(dims_, o, dims_.max_T, &c, &s);
  TERN_ASSIGN_OR_RETURN(Buffer<T> cos, Buffer<T>::Create(*backend_.device, c.size(),
                                                         MemoryTier::kDevice, "Ms-PoE cos tables"));
  TERN_ASSIGN_OR_RETURN(Buffer<T> sin, Buffer<T>::Create(*backend_.device, s.size(),
                                                         MemoryTier::kDevice, "Ms-PoE sin tables"));
  const std::vector<T> ct(c.begin(), c.end()), st(s.begin(), s.end());
  backend_.device->Copy(cos.data(), ct.data(), ct.size() * sizeof(T));
  backend_.device->Copy(sin.data(), st.data(), st.size() * sizeof(T));
  ms_poe_cos_ = std::move(cos);
  ms_poe_sin_ = std::move(sin);
  ms_poe_ = o;
  ms_poe_on_ = true;
  ms_poe_fixed_.clear();
  return absl::OkStatus();
}

template <typename T>
void Transformer<T>::clear_ms_poe() {
  ms_poe_on_ = false;
  ms_poe_cos_.reset();
  ms_poe_sin_.reset();
  ms_poe_heads_.reset();
  ms_poe_fixed_.clear();
  ms_poe_slots_.clear();
}

template <typename T>
absl::Status Transformer<T>::set_ms_poe_fixed_slots(std::vector<int32_t> slots) {
  const int L = dims_.L, S = dims_.NKV;
  if (!slots.empty()) {
    if (!ms_poe_on_) return absl::FailedPreconditionError("Ms-PoE slots without set_ms_poe");
    if (slots.size() != size_t(L) * S)
      return absl::InvalidArgumentError(absl::StrCat(
          "Ms-PoE slots: ", slots.size(), " values; the model needs L x S = ", L, " x ", S));
    for (int l = ms_poe_.first_layer; l < L; ++l) {
      std::vector<int32_t> s(slots.begin() + size_t(l) * S, slots.begin() + size_t(l + 1) * S);
      std::sort(s.begin(), s.end());
      for (int g = 0; g < S; ++g)
        if (s[g] != g)
          return absl::InvalidArgumentError(
              absl::StrCat("Ms-PoE slots of layer ", l, " are not a permutation of 0..", S - 1));
    }
  }
  ms_poe_fixed_ = std::move(slots);
  return absl::OkStatus();
}

template <typename T>
void Transformer<T>::MsPoeBeginPass(int B, int32_t* slots, const int* pos0) {
  const size_t per = size_t(dims_.L) * dims_.NKV;
  ms_poe_pass_ = slots;
  ms_poe_measure_.assign(B, 1);
  for (int b = 0; b < B; ++b) {
    int32_t* row = slots + b * per;
    if (pos0 != nullptr) {  // a KV cache row: measured by the call that starts it
      ms_poe_measure_[b] = pos0[b] == 0 || row[size_t(ms_poe_.first_layer) * dims_.NKV] < 0;
    } else if (!ms_poe_fixed_.empty()) {
      std::copy(ms_poe_fixed_.begin(), ms_poe_fixed_.end(), row);
      ms_poe_measure_[b] = 0;
    }
  }
}

template <typename T>
void Transformer<T>::MsPoeRope(T* qkv, int B, int Tn, const int32_t* pos, int layer) {
  const auto& d = dims_;
  const int S = d.NKV, G = d.NH / d.NKV, heads = d.NH + d.NKV;
  const size_t QKV = d.QKV(), per = size_t(d.L) * S;
  std::vector<T> rows;
  std::vector<int32_t> table(size_t(B) * heads);
  for (int b = 0; b < B; ++b) {
    int32_t* slot = ms_poe_pass_ + b * per + size_t(layer) * S;
    if (ms_poe_measure_[b]) {  // this sequence's q/k rows before RoPE, on the host
      rows.resize(size_t(Tn) * QKV);
      backend_.device->Copy(rows.data(), qkv + size_t(b) * Tn * QKV, rows.size() * sizeof(T));
      const std::vector<int32_t> s =
          MsPoeSlots(MsPoeOutlierFractions(rows.data(), Tn, d.NH, d.NKV, d.HS), d.NH, d.NKV);
      std::copy(s.begin(), s.end(), slot);
    }
    for (int h = 0; h < d.NH; ++h) table[size_t(b) * heads + h] = slot[h / G];
    for (int j = 0; j < d.NKV; ++j) table[size_t(b) * heads + d.NH + j] = slot[j];
  }
  if (ms_poe_heads_.size() < table.size()) {
    auto buf = Buffer<int32_t>::Create(*backend_.device, table.size(), MemoryTier::kDevice,
                                       "Ms-PoE head tables");
    TERN_CHECK(buf.ok()) << buf.status();
    ms_poe_heads_ = std::move(*buf);
  }
  backend_.device->Copy(ms_poe_heads_.data(), table.data(), table.size() * sizeof(int32_t));
  ops_->rope_forward_heads(qkv, ms_poe_cos_.data(), ms_poe_sin_.data(), d.max_T,
                           ms_poe_heads_.data(), B, Tn, d.NH, d.NKV, d.HS, pos);
}

#define TERN_INSTANTIATE(T)                                                           \
  template absl::Status Transformer<T>::set_ms_poe(const MsPoeOptions&);              \
  template void Transformer<T>::clear_ms_poe();                                       \
  template absl::Status Transformer<T>::set_ms_poe_fixed_slots(std::vector<int32_t>); \
  template void Transformer<T>::MsPoeBeginPass(int, int32_t*, const int*);            \
  template void Transformer<T>::MsPoeRope(T*, int, int, const int32_t*, int);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)
#undef TERN_INSTANTIATE

}  // namespace tern::model
