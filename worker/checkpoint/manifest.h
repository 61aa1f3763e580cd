// The checkpoint layout and its commit point.
//
//   <root>/step-000120/rank-00000.bin ...  each rank's segments (shard_writer.h)
//   <root>/step-000120/manifest.json       written LAST (temp, fsync, rename, fsync dir)
//   <root>/latest                          "step-000120\n", replaced atomically the same way
//
// A step directory without a manifest is incomplete and is never loaded. manifest.json is the
// universal index: for every state, the segments each rank wrote (file, file_offset,
// global_offset, numel) with a CRC32C per fixed-size block, from which the per-parameter
// fragments follow — see ManifestToJson() for the schema. Version 1 manifests (one CRC32C per
// fragment, no blocks) still load; `tern ckpt upgrade` rewrites them as version 2.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/checkpoint/shard_writer.h"
#include "worker/core/param_table.h"

namespace tern::ckpt {

inline constexpr int kManifestVersion = 2;  // written; versions 1 and 2 are read
inline constexpr const char* kManifestName = "manifest.json";
inline constexpr const char* kLatestName = "latest";

struct ManifestFile {
  std::string name;  // relative to the step directory
  int rank = 0;
  uint64_t size = 0;
};

struct ManifestFragment {
  uint32_t file = 0;   // index into Manifest::files
  uint32_t param = 0;  // index into Manifest::params.entries()
  uint64_t file_offset = 0;
  uint64_t global_offset = 0;
  uint64_t numel = 0;
  uint32_t crc32c = 0;  // version 1 only: CRC32C of the whole fragment
};

// One contiguous range of a state in one file (what one rank wrote as one segment).
struct ManifestSegment {
  uint32_t file = 0;
  uint64_t file_offset = 0;
  uint64_t global_offset = 0;
  uint64_t numel = 0;
  std::vector<uint32_t> block_crc32c;  // CRC32C of segment bytes [k*B, min((k+1)*B, end))
};

struct ManifestState {
  std::string name;
  std::string dtype;
  uint32_t elem_bytes = 0;
  uint64_t block_bytes = 0;                 // B (version 2); 0 in version 1
  std::vector<ManifestSegment> segments;    // version 2: sorted by global_offset
  std::vector<ManifestFragment> fragments;  // sorted by global_offset, non-overlapping
};

struct Manifest {
  int version = kManifestVersion;
  int64_t step = 0;
  int64_t created_unix_ms = 0;
  nlohmann::json world = nlohmann::json::object();  // caller's layout (dp size, zero stage, ...)
  nlohmann::json extra = nlohmann::json::object();  // caller's blobs (data loader, rng, job, ...)
  ParamTable params;
  std::vector<ManifestFile> files;
  std::vector<ManifestState> states;
};

struct CommitOptions {
  nlohmann::json world = nlohmann::json::object();  // stored as "world"
  nlohmann::json extra = nlohmann::json::object();  // stored as "extra" (opaque)
  bool require_full_coverage = true;  // every state must cover every parameter exactly once
  bool check_files = true;            // stat each rank file (needs a shared filesystem)
  int keep_last = 0;                  // > 0: delete all but the newest keep_last complete steps
  // >= 0: the commit is fenced by round (ClaimRound): refused once a newer round has claimed
  // the root. -1: no fence (tern train, one run owns its root).
  int64_t round = -1;
};

// Rounds of a cluster job share one checkpoint root, and a stale round's rank 0 may still be
// finishing a write when the next round starts. ClaimRound records `round` in <root>/round under
// an exclusive lock (<root>/.round.lock, flock); CommitManifest with options.round takes the
// same lock and commits only while <root>/round still names its round. FAILED_PRECONDITION
// when a newer round already holds the root.
absl::Status ClaimRound(const std::string& root, int64_t round);

// Validates the gathered shard results (files unique, fragments in range and not overlapping,
// full coverage when asked), writes <root>/step-NNNNNN/manifest.json atomically, then points
// <root>/latest at it, then applies keep_last. Rank 0 only.
absl::Status CommitManifest(const std::string& root, int64_t step,
                            const std::vector<RankShardResult>& shards, const ParamTable& table,
                            const CommitOptions& options = {});

// Single-process helper (tests, `tern train` on one rank): writes every simulated rank's
// segments with WriteRankShard, then CommitManifest.
absl::Status SaveCheckpointLocal(const std::string& root, int64_t step,
                                 const std::vector<std::vector<Segment>>& rank_segments,
                                 const ParamTable& table, const CommitOptions& commit = {},
                                 const WriterOptions& writer = {});

// Cuts `seg` at the parameter boundaries of `table` into fragments of file `file`.
std::vector<ManifestFragment> FragmentsOf(const ManifestSegment& seg, uint32_t elem_bytes,
                                          const ParamTable& table);

nlohmann::json ManifestToJson(const Manifest& m);
absl::StatusOr<Manifest> ManifestFromJson(const nlohmann::json& j, const std::string& where);
// Reads and parses <step_dir>/manifest.json: NOT_FOUND if absent, DATA_LOSS if unparsable.
absl::StatusOr<Manifest> ReadManifest(const std::string& step_dir);
// Every file the manifest names exists with its recorded size (NOT_FOUND / DATA_LOSS).
absl::Status CheckManifestFiles(const std::string& step_dir, const Manifest& m);

struct StepInfo {
  std::string name;  // "step-000120"
  int64_t step = 0;
  bool complete = false;
  std::string problem;  // why not complete ("" when complete)
  uint64_t bytes = 0;   // all files in the directory
  int files = 0;
};
// Step directories under root, ascending by step.
absl::StatusOr<std::vector<StepInfo>> ListCheckpoints(const std::string& root);
// Removes incomplete step directories older than the newest complete one (a newer incomplete
// one may be being written right now). Returns the removed names.
absl::StatusOr<std::vector<std::string>> CleanupIncomplete(const std::string& root);
// Keeps the newest `keep_last` complete steps (and anything newer); removes older ones.
absl::StatusOr<std::vector<std::string>> ApplyRetention(const std::string& root, int keep_last);
// "--> hint: step-000100 is complete: resume from it with --set checkpoint.load=step-000100"
// (the newest complete step other than `exclude`).
std::string CompleteHint(const std::string& root, const std::string& exclude);
// Branching from an older step: renames every step directory newer than `step` to
// "<name>.set-aside-<UTC time>" (a name Tern never loads, cleans up or overwrites), then
// points `latest` at `step`. Returns the new names, relative to root.
absl::StatusOr<std::vector<std::string>> SetAsideNewerThan(const std::string& root, int64_t step);

}  // namespace tern::ckpt
