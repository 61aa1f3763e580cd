// Model weights in the Hugging Face layout: DIR/config.json + DIR/model.safetensors (or shards
// with model.safetensors.index.json; safetensors.h), and Tern checkpoints read as weights.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tern/v1/job.pb.h"
#include "worker/core/param_table.h"
#include "worker/engine/safetensors.h"
#include "worker/model/config.h"
#include "worker/model/quantized.h"

namespace tern::engine {

// config.json's text for the model: HF field names, every dimension resolved, torch_dtype from
// the safetensors dtype of the weights.
std::string HfConfigJson(const tern::v1::ModelConfig& config, const model::ModelDims& dims,
                         const std::string& dtype);

// Writes the model directory: config.json (HF field names, every dimension resolved) and the
// weights (`options`: dtype, shard size). Files are written under temporary names and renamed.
absl::Status SaveModel(const std::string& dir, const tern::v1::ModelConfig& config,
                       const model::ModelDims& dims, const ParamTable& table,
                       const std::vector<float>& params,
                       const SafetensorsWriteOptions& options = {});

struct LoadedModel {
  tern::v1::ModelConfig config;  // the model section it was built from
  model::ModelDims dims;
  std::vector<float> params;  // in the ParamTable order of a Transformer built from dims
  // A quantized model: its matrices, and the other parameters in a table-sized buffer (`params`
  // is empty) whose slots for the quantized matrices are never written or read (allocated with
  // calloc, so they take no memory).
  std::shared_ptr<const model::QuantizedWeights> quantized;
  std::shared_ptr<float> rest;

  // The flat parameter buffer to run the model on (set_quantized(quantized.get()) first when
  // `quantized` is set).
  const float* weights() const { return quantized ? rest.get() : params.data(); }
};

// Reads DIR/config.json and the safetensors weights (single or sharded; F32, BF16, F16): the
// tensors must be exactly the model's (every missing, extra and mis-shaped one listed). A
// quantized directory (SaveQuantizedModel) loads into `quantized` and `rest`, its tensors
// checked the same way.
absl::StatusOr<LoadedModel> LoadModel(const std::string& dir);

// Reads the fp32 master weights of a committed checkpoint (`which` = "latest" or
// "step-NNNNNN" under the checkpoint root), with the model taken from its job spec.
absl::StatusOr<LoadedModel> LoadModelFromCheckpoint(const std::string& root,
                                                    const std::string& which = "latest");

// A Tern checkpoint (a root with `latest`, or a step directory with manifest.json) or a
// safetensors model directory, whichever DIR is.
absl::StatusOr<LoadedModel> LoadModelAny(const std::string& dir);

// The initial weights of `table` from DIR (checkpoint.init_from): a safetensors directory or a
// Tern checkpoint; strict match before anything is read.
absl::StatusOr<std::vector<float>> LoadInitWeights(const std::string& dir, const ParamTable& table);

}  // namespace tern::engine
