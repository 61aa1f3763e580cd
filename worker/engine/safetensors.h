// Hugging Face safetensors, read and written exactly as the format specifies: an 8-byte
// little-endian header length N, N bytes of JSON ({"name": {"dtype", "shape",
// "data_offsets": [begin, end)}, "__metadata__": {...}}, padded with spaces so the data starts
// 8-byte aligned), then the tensors' bytes back to back with no holes. A model too large for one
// file is sharded as model-00001-of-0000K.safetensors plus model.safetensors.index.json
// ({"metadata": {"total_size"}, "weight_map": {name: file}}). Dtypes: F32, BF16, F16 (read into
// and written from fp32; BF16/F16 round to nearest even); U8 and I8 hold quantized weights (read
// and written as bytes; model weights for training must be one of the first three).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/core/param_match.h"
#include "worker/core/param_table.h"

namespace tern::engine {

struct SafeTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::string dtype;   // "F32", "BF16" or "F16"
  std::string file;    // path of the .safetensors file
  uint64_t begin = 0;  // absolute byte offsets of the data in `file`
  uint64_t end = 0;
};

// "f32"/"F32" -> "F32", "bf16" -> "BF16", "f16"/"fp16" -> "F16"; INVALID_ARGUMENT otherwise.
absl::StatusOr<std::string> SafetensorsDtype(const std::string& name);

// Every tensor of DIR/model.safetensors, or of the shards DIR/model.safetensors.index.json
// names. Checks the header of each file (length, JSON, dtype, shape, data_offsets within the
// file and of the dtype's size); DATA_LOSS naming the file and tensor, NOT_FOUND when DIR holds
// neither file.
absl::StatusOr<std::vector<SafeTensor>> ListSafetensors(const std::string& dir);

// Reads `t` into out[0, numel), converting to fp32.
absl::Status ReadTensorF32(const SafeTensor& t, float* out);

// Reads every parameter of `table` from DIR into a flat buffer in table order. The tensors must
// match the table exactly (MatchTensors: every missing, extra and mis-shaped tensor listed)
// before anything is read. GPT-2 files without the "transformer." prefix are accepted.
absl::StatusOr<std::vector<float>> ReadWeights(const std::string& dir, const ParamTable& table);

// Reads `t`'s bytes as stored (U8 / I8 tensors: quantized weights) into out[0, t.end - t.begin).
absl::Status ReadTensorBytes(const SafeTensor& t, void* out);

struct SafetensorsWriteOptions {
  std::string dtype = "F32";              // F32, BF16 or F16
  uint64_t max_shard_bytes = 5ull << 30;  // a file holds at most this much data (5 GiB)
};

// Writes `params` (table order) as DIR/model.safetensors, or sharded with an index when the
// data exceeds max_shard_bytes. Files are written under temporary names and renamed into place.
absl::Status WriteSafetensors(const std::string& dir, const ParamTable& table, const float* params,
                              const SafetensorsWriteOptions& options = {});

// One tensor to write: fp32 `values` written as `dtype` (F32, BF16, F16), or `raw` bytes written
// as they are (U8, I8: one byte per element).
struct OutTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  const float* values = nullptr;
  const void* raw = nullptr;
};

// Writes `tensors` in order like WriteSafetensors (options.dtype is not used: each tensor has its
// own), sharding at options.max_shard_bytes.
absl::Status WriteSafetensorsTensors(const std::string& dir, const std::vector<OutTensor>& tensors,
                                     const SafetensorsWriteOptions& options = {});

// fp32 <-> bf16 / f16 bit patterns, round to nearest even.
uint16_t FloatToBf16(float f);
float Bf16ToFloat(uint16_t h);
uint16_t FloatToF16(float f);
float F16ToFloat(uint16_t h);

}  // namespace tern::engine
