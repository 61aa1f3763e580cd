#include "worker/model/ms_poe.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace tern::model {

absl::StatusOr<MsPoeOptions> ParseMsPoe(const std::string& spec) {
  const std::vector<std::string> parts = absl::StrSplit(spec, ':');
  const std::string what = absl::StrCat("Ms-PoE '", spec, "'");
  if (parts.size() != 2 && parts.size() != 3)
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected MIN:MAX or MIN:MAX:FIRST_LAYER (e.g. 1.2:1.8)"));
  MsPoeOptions o;
  if (!absl::SimpleAtod(parts[0], &o.min_ratio) || !std::isfinite(o.min_ratio))
    return absl::InvalidArgumentError(absl::StrCat(what, ": MIN '", parts[0], "' is not a number"));
  if (!absl::SimpleAtod(parts[1], &o.max_ratio) || !std::isfinite(o.max_ratio))
    return absl::InvalidArgumentError(absl::StrCat(what, ": MAX '", parts[1], "' is not a number"));
  if (parts.size() == 3 && (!absl::SimpleAtoi(parts[2], &o.first_layer) || o.first_layer < 0))
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": FIRST_LAYER '", parts[2], "' is not a layer index >= 0"));
  if (o.min_ratio < 1.0)
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": MIN ", o.min_ratio,
                     " is below 1 (Ms-PoE compresses positions: p / r with r >= 1)"));
  if (o.min_ratio > o.max_ratio)
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": MIN ", o.min_ratio, " exceeds MAX ", o.max_ratio));
  return o;
}

absl::Status ValidateMsPoe(const MsPoeOptions& o, const ModelDims& d) {
  if (d.is_gpt2())
    return absl::InvalidArgumentError(absl::StrCat("Ms-PoE rescales RoPE positions; this ",
                                                   d.model_type, " model has learned positions"));
  if (d.longrope)
    return absl::InvalidArgumentError(
        "Ms-PoE is not implemented over LongRoPE (rope_scaling); the reference implements it "
        "for plain RoPE only");
  if (!(o.min_ratio >= 1.0) || !(o.min_ratio <= o.max_ratio) || !std::isfinite(o.max_ratio))
    return absl::InvalidArgumentError(
        absl::StrCat("Ms-PoE ratios ", o.min_ratio, ":", o.max_ratio, ": need 1 <= MIN <= MAX"));
  if (o.first_layer < 0 || o.first_layer >= d.L)
    return absl::InvalidArgumentError(
        absl::StrCat("Ms-PoE from layer ", o.first_layer, ": the model has ", d.L, " layers (0..",
                     d.L - 1, "); give MIN:MAX:FIRST_LAYER with a smaller one"));
  return absl::OkStatus();
}

double MsPoeRatio(const MsPoeOptions& o, int slot, int slots) {
  return o.min_ratio + (o.max_ratio - o.min_ratio) * (double(slot) / double(slots));
}

template <typename T>
std::vector<double> MsPoeOutlierFractions(const T* qkv, int Tn, int NH, int NKV, int HS) {
  const size_t QKV = size_t(NH + 2 * NKV) * HS;
  const int G = NH / NKV;
  const double scale = 1.0 / std::sqrt(double(HS));
  std::vector<double> out(NH), w(Tn);
  const T* last = qkv + size_t(Tn - 1) * QKV;  // the last token's row
  for (int h = 0; h < NH; ++h) {
    const T* q = last + size_t(h) * HS;
    double mx = -INFINITY;
    for (int j = 0; j < Tn; ++j) {
      const T* k = qkv + size_t(j) * QKV + size_t(NH + h / G) * HS;
      double s = 0;
      for (int i = 0; i < HS; ++i) s += double(q[i]) * double(k[i]);
      w[j] = s * scale;
      mx = std::max(mx, w[j]);
    }
    double z = 0;
    for (int j = 0; j < Tn; ++j) z += w[j] = std::exp(w[j] - mx);
    double mean = 0;
    for (int j = 0; j < Tn; ++j) mean += w[j] /= z;
    mean /= Tn;
    int outliers = 0;
    for (int j = 0; j < Tn; ++j) outliers += w[j] > 3 * mean ? 1 : 0;
    out[h] = double(outliers) / Tn;
  }
  return out;
}

std::vector<int32_t> MsPoeSlots(const std::vector<double>& fractions, int NH, int NKV) {
  const int G = NH / NKV;
  std::vector<double> group(NKV, 0.0);
  for (int h = 0; h < NH; ++h) group[h / G] += fractions[h] / G;
  std::vector<int> order(NKV);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return group[a] > group[b]; });
  std::vector<int32_t> slot(NKV);
  for (int r = 0; r < NKV; ++r) slot[order[r]] = r;
  return slot;
}

void MsPoeTablesHost(const ModelDims& d, const MsPoeOptions& o, int rows, std::vector<double>* cos,
                     std::vector<double>* sin) {
  const int half = d.HS / 2, S = d.NKV;
  cos->assign(size_t(S) * rows * half, 0.0);
  sin->assign(cos->size(), 0.0);
  for (int s = 0; s < S; ++s) {
    const double r = MsPoeRatio(o, s, S);
    for (int i = 0; i < half; ++i) {
      // The plain table's formula (kernels/cpu/rope.cc) at position t / r.
      const double inv_freq = 1.0 / std::pow(static_cast<double>(d.rope_theta), 2.0 * i / d.HS);
      for (int t = 0; t < rows; ++t) {
        const double a = (t / r) * inv_freq;
        const size_t at = (size_t(s) * rows + t) * half + i;
        (*cos)[at] = std::cos(a);
        (*sin)[at] = std::sin(a);
      }
    }
  }
}

template std::vector<double> MsPoeOutlierFractions<float>(const float*, int, int, int, int);
template std::vector<double> MsPoeOutlierFractions<double>(const double*, int, int, int, int);

}  // namespace tern::model
