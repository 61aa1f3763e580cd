// Final weights as Hugging Face-style files: DIR/config.json + DIR/model.safetensors (F32).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tern/v1/job.pb.h"
#include "worker/core/param_table.h"
#include "worker/model/config.h"

namespace tern::engine {

// Writes the model directory (temp files renamed into place).
absl::Status SaveModel(const std::string& dir, const tern::v1::ModelConfig& config,
                       const model::ModelDims& dims, const ParamTable& table,
                       const std::vector<float>& params);

struct LoadedModel {
  model::ModelDims dims;
  std::vector<float> params;  // in the ParamTable order of a Transformer built from dims
};

// Reads DIR/config.json and DIR/model.safetensors; every parameter of the table must be
// present with its shape (errors name the file and tensor).
absl::StatusOr<LoadedModel> LoadModel(const std::string& dir);

// Reads the fp32 master weights of a committed checkpoint (`which` = "latest" or
// "step-NNNNNN" under the checkpoint root), with the model taken from its job spec.
absl::StatusOr<LoadedModel> LoadModelFromCheckpoint(const std::string& root,
                                                    const std::string& which = "latest");

}  // namespace tern::engine
