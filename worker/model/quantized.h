// Weight-only quantized inference: the transformer's matrices (per layer q|k|v, the attention
// output, the MLP's up (gate|up) and down projections, and the LM head) in FP6, INT8 or INT4
// (kernels/wquant.h). Embeddings, norms and biases stay fp32 in the model's flat buffer; a
// model with QuantizedWeights set never reads the fp32 slots of the matrices they replace.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/wquant.h"
#include "worker/core/param_table.h"

namespace tern::model {

struct QuantizedLayer {
  kernels::QuantizedMatrix qkv, o, fc, proj;
};

struct QuantizedWeights {
  kernels::WeightFormat format = kernels::WeightFormat::kFp6;
  std::vector<QuantizedLayer> layers;
  kernels::QuantizedMatrix head;  // the LM head (a tied model: a quantized copy of the embeddings)

  // Bytes of every quantized matrix: what one token's forward reads of them.
  uint64_t bytes() const;
};

// One matrix the quantized path replaces, as the model's table stores it: the entries whose
// rows it stacks (q_proj, k_proj, v_proj for Llama's q|k|v; one entry otherwise), their layout,
// and where it goes in QuantizedWeights.
struct LinearWeight {
  enum Slot { kQkv, kO, kFc, kProj, kHead };
  int layer = -1;  // -1 for the head
  Slot slot = kHead;
  std::vector<const ParamEntry*> entries;
  bool transposed = false;  // GPT-2's Conv1D stores (in, out)
  int rows = 0, cols = 0;   // output channels, input channels
  // A tied head reads the embeddings' entry; its quantized tensors are named "lm_head.weight".
  bool tied_head = false;
};

// The matrix of `w`'s slot in `q`.
kernels::QuantizedMatrix& SlotOf(QuantizedWeights& q, const LinearWeight& w);
const kernels::QuantizedMatrix& SlotOf(const QuantizedWeights& q, const LinearWeight& w);

// Rows of several matrices with the same format and columns stacked into one (each row keeps
// its own scales, so q|k|v quantized apart equal q|k|v quantized together).
kernels::QuantizedMatrix StackRows(std::vector<kernels::QuantizedMatrix> parts);

}  // namespace tern::model
