// One rank's part of a checkpoint: its segments of the flat state buffers, written with the
// FastPersist engine to <root>/step-NNNNNN/rank-RRRRR.bin. Model-agnostic: a segment is a
// range of a named state's flat buffer, checksummed per fixed-size block (CRC32C of each
// WriterOptions::checksum_block bytes from the segment's start); the parameter table only
// decides where fragments are cut (one fragment = one segment ∩ one parameter: the index).
//
// Ranks exchange nothing here: each returns a RankShardResult (JSON-serialisable), the caller
// gathers them (e.g. all-gather over its communicator) and rank 0 calls CommitManifest
// (manifest.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/checkpoint/io_engine.h"
#include "worker/core/param_table.h"

namespace tern::ckpt {

// Bytes per element of a dtype name ("f32", "bf16", "f16", "f64", "i32", "i64", "u8", "i8"),
// 0 when unknown.
uint32_t DtypeBytes(const std::string& dtype);

// A range of one state's flat buffer held by this rank.
struct Segment {
  std::string state;           // "master", "exp_avg", "exp_avg_sq", "weights", ...
  uint64_t global_offset = 0;  // first element in the state's flat buffer (ParamTable offsets)
  uint64_t numel = 0;          // elements
  std::string dtype = "f32";
  const void* data = nullptr;  // numel elements; only read during the write
};

// The part of a segment inside one parameter.
struct FragmentRecord {
  uint32_t param = 0;          // index into ParamTable::entries()
  uint64_t global_offset = 0;  // element offset in the state's flat buffer
  uint64_t numel = 0;
  uint64_t file_offset = 0;  // byte offset in the rank file
  uint32_t crc32c = 0;       // of the fragment's bytes (manifest v1 only; v2 checksums blocks)
};

struct SegmentRecord {
  std::string state;
  std::string dtype;
  uint64_t global_offset = 0;
  uint64_t numel = 0;
  uint64_t file_offset = 0;            // 4 KiB aligned
  uint64_t block_bytes = 0;            // checksum block size
  std::vector<uint32_t> block_crc32c;  // CRC32C of bytes [k*block_bytes, (k+1)*block_bytes)
  std::vector<FragmentRecord> fragments;
};

// What one rank wrote; gathered by the caller and handed to CommitManifest.
struct RankShardResult {
  int rank = 0;
  std::string file;     // "rank-00003.bin", relative to the step directory
  uint64_t size = 0;    // bytes
  std::string io_path;  // IoPathName() actually used
  double write_seconds = 0;
  std::vector<SegmentRecord> segments;

  nlohmann::json ToJson() const;
  static absl::StatusOr<RankShardResult> FromJson(const nlohmann::json& j);
};

// File layout of `segments` as FileWriter lays it out: byte offset of each (4 KiB aligned)
// and the total file size. Fails on an unknown dtype.
absl::StatusOr<std::vector<uint64_t>> SegmentFileOffsets(const std::vector<Segment>& segments,
                                                         uint64_t* total_size);

// Writes this rank's file (creating the step directory), fsyncs it and the directory, and
// returns what was written. Refuses (FAILED_PRECONDITION) to write into a step that already
// has a committed manifest. Segments must lie inside [0, table.total()).
absl::StatusOr<RankShardResult> WriteRankShard(const std::string& root, int64_t step, int rank,
                                               const std::vector<Segment>& segments,
                                               const ParamTable& table,
                                               const WriterOptions& options = {});

}  // namespace tern::ckpt
