// Ms-PoE, multi-scale positional encoding (Zhang et al. 2024, "Found in the Middle: How Language
// Models Use Long Contexts Better via Plug-and-Play Positional Encoding"; reference code
// VITA-Group/Ms-PoE, utils/modify_arch/llama.py): an inference-time change to RoPE, no
// fine-tuning. In every layer from `first_layer` on, the queries and keys of head group g rotate
// with positions p / r_g instead of p. The S ratios are spread over [MIN, MAX):
// r_s = MIN + (MAX - MIN) * s / S (as the reference: MAX itself is not reached), and the slot s
// of each group is its rank by a position-sensitivity statistic measured per layer on the first
// forward of a sequence (its prompt) and kept for the rest of it (KV-cache decoding and
// recomputation alike): the groups whose attention has the most outliers get the ratios closest
// to MIN.
//
// The statistic (the reference's _head_wise_statistics / _calculate_outlier): for query head h,
// the attention of the sequence's last token over all its tokens computed from the q and k
// *before* RoPE (no positions), softmax(q . k / sqrt(HS)); the fraction of keys whose weight
// exceeds 3 x the row's mean weight.
//
// Where Tern differs from the reference code, and why:
// - Grouped-query attention: one ratio per key/value group (S = num_key_value_heads), the
//   group's statistic the mean over its query heads, so a query and the keys it attends to
//   always share a ratio and attention still depends on relative position only. The reference
//   gives each query head its own ratio and rotates the keys of a group with the ratio of the
//   group's first query head (`cos[::num_key_value_groups]`), so the other query heads of a group
//   see mismatched scales. With one query head per group (multi-head attention, the models the
//   paper evaluates) the two are the same.
// - Assignment: the group ranked k-th by the statistic (most outliers first) gets slot k, the
//   paper's rule. The reference code indexes its per-slot tables with the argsort itself
//   (`cos[head_order]`), which gives head h the slot head_order[h], the inverse permutation;
//   the two agree when the ordering is its own inverse. Ties keep the lower index first.
// - The statistic is computed in double (the reference: fp32 softmax, compared in fp16) and the
//   tables in double (positions p / r are fractional) rounded once to the model's type.
// - Layers: the reference's scripts apply it to layers 2..31 of a 32-layer Llama;
//   `first_layer` defaults to 2 and can be set.
// - Not for GPT-2 (learned positions) nor LongRoPE models (the reference implements no rope
//   scaling with it): refused by name.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model/config.h"

namespace tern::model {

struct MsPoeOptions {
  double min_ratio = 1.2, max_ratio = 1.8;  // the paper's default range
  int first_layer = 2;                      // layers [first_layer, L) are rescaled
};

// "MIN:MAX" or "MIN:MAX:FIRST_LAYER" (the CLI's --ms-poe); INVALID_ARGUMENT naming what is
// wrong (not numbers, MIN < 1, MIN > MAX, a negative layer).
absl::StatusOr<MsPoeOptions> ParseMsPoe(const std::string& spec);
// Whether Ms-PoE applies to the model: RoPE positions (not GPT-2's learned ones), not LongRoPE,
// 1 <= MIN <= MAX, first_layer < num_hidden_layers.
absl::Status ValidateMsPoe(const MsPoeOptions& o, const ModelDims& d);
// The ratio of slot `slot` of `slots`.
double MsPoeRatio(const MsPoeOptions& o, int slot, int slots);

// The statistic of every query head (NH) of one sequence: qkv (Tn, QKV), the rows before RoPE.
template <typename T>
std::vector<double> MsPoeOutlierFractions(const T* qkv, int Tn, int NH, int NKV, int HS);
// The slot of each of the NKV groups: the rank of the group's mean statistic, largest first.
std::vector<int32_t> MsPoeSlots(const std::vector<double>& fractions, int NH, int NKV);
// The rotation tables of every slot: S = NKV stacked (rows, HS/2) tables, slot s's angle
// (p / r_s) * theta^(-2i/HS), in double. For r = 1 the values are exactly the plain tables'.
void MsPoeTablesHost(const ModelDims& d, const MsPoeOptions& o, int rows, std::vector<double>* cos,
                     std::vector<double>* sin);

}  // namespace tern::model
