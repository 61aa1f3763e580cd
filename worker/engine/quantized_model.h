// Weight-only quantized model directories: written by `tern ckpt export --quantize`, read by
// LoadModel (export.h) for `tern generate` and `tern eval`.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/wquant.h"
#include "nlohmann/json.hpp"
#include "worker/engine/export.h"

namespace tern::engine {

// Writes a weight-only quantized model directory (`tern ckpt export --quantize`): config.json
// with `quantization_config` {"quant_method": "tern", "format": fp6|int8|int4, ...}, and the
// safetensors weights: each matrix the quantized path replaces (model/quantized.h) as its
// format's tensors under the parameter's name plus a suffix (fp6: NAME.fp6_hi, the 4-bit plane,
// and NAME.fp6_lo, the 2-bit plane, U8 [rows, bytes per row]; int8: NAME.int8, I8 [rows, cols
// padded to 64]; int4: NAME.int4, U8 [rows, 64 bytes per 128 columns]; and NAME.scale, F32 [rows]
// or [rows, groups]); a tied head as "lm_head.weight.*"; every other parameter (embeddings,
// norms, biases) in F32. Returns the bytes of the quantized matrices (planes and scales).
absl::StatusOr<uint64_t> SaveQuantizedModel(const std::string& dir,
                                            const tern::v1::ModelConfig& config,
                                            const model::ModelDims& dims,
                                            const std::vector<float>& params,
                                            kernels::WeightFormat format,
                                            const SafetensorsWriteOptions& options = {});

// The weights of the quantized directory DIR whose config.json (already read into out->config
// and out->dims) holds `quantization`: every tensor checked against the model before anything
// is read (missing, extra and mis-shaped ones listed), then out->quantized and out->rest filled.
absl::Status LoadQuantizedWeights(const std::string& dir, const nlohmann::json& quantization,
                                  LoadedModel* out);

}  // namespace tern::engine
