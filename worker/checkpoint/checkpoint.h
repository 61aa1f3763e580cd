// Loading a committed checkpoint through its manifest (the universal index): any range of any
// state, assembled from the segments of the rank files. Version 2 manifests checksum every
// block (manifest_json.cc) and a read fetches and verifies exactly the blocks its range
// overlaps: at most one block beyond each end of the range (plus the O_DIRECT 4 KiB rounding
// of a segment's end). Version 1 manifests stream and verify a whole fragment on its first
// touch. Loading into a different data/sequence-parallel layout is just different ReadState
// ranges; PlanRead says which bytes a range costs without reading them.
//
// Threading: a Checkpoint is used by one thread at a time (it owns one IoEngine).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/checkpoint/io_engine.h"
#include "worker/checkpoint/manifest.h"

namespace tern::ckpt {

// A contiguous byte range of one checkpoint file that a read fetches.
struct ReadExtent {
  uint32_t file = 0;    // index into Manifest::files
  uint64_t offset = 0;  // byte offset in the file
  uint64_t bytes = 0;   // fetched (whole checksum blocks; whole fragments in version 1)
  uint64_t wanted = 0;  // of which the range asked for
};

class Checkpoint {
 public:
  // `which`: "latest" (the step <root>/latest names) or a step directory name
  // ("step-000120"). Verifies the manifest parses and every file exists with its size.
  // Errors name the file and end with a hint naming the newest other complete step.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& root,
                                                          const std::string& which = "latest",
                                                          const IoOptions& io = {});
  ~Checkpoint();

  const std::string& root() const { return root_; }
  const std::string& name() const { return name_; }  // "step-000120"
  std::string dir() const { return root_ + "/" + name_; }
  int64_t step() const { return manifest_.step; }
  const Manifest& manifest() const { return manifest_; }
  const ParamTable& params() const { return manifest_.params; }
  const nlohmann::json& world() const { return manifest_.world; }
  const nlohmann::json& extra() const { return manifest_.extra; }
  std::vector<std::string> states() const;

  // Reads elements [global_offset, global_offset + numel) of `state` into `dst`
  // (numel * element size bytes), verifying every checksum block it fetches (version 1: every
  // fragment not yet verified is read whole once): mismatch -> DATA_LOSS, missing file ->
  // NOT_FOUND, both naming the file, the parameter and the state.
  absl::Status ReadState(const std::string& state, uint64_t global_offset, uint64_t numel,
                         void* dst);
  // The file ranges ReadState(state, global_offset, numel) fetches (version 1: as if no
  // fragment were verified yet). NOT_FOUND for an unknown state or a range with no data.
  absl::StatusOr<std::vector<ReadExtent>> PlanRead(const std::string& state, uint64_t global_offset,
                                                   uint64_t numel) const;
  // Reads and checks every block (version 1: fragment) of every state.
  absl::Status Verify();

  // Bytes fetched by ReadState/Verify (whole checksum blocks, as planned).
  uint64_t bytes_read() const { return bytes_read_; }
  // Bytes the I/O engine read from the files (adds the O_DIRECT 4 KiB rounding).
  uint64_t io_bytes_read() const { return engine_->bytes_read(); }

 private:
  Checkpoint() = default;
  absl::StatusOr<FileReader*> Reader(uint32_t file);
  absl::StatusOr<const ManifestState*> FindState(const std::string& state) const;
  absl::Status ReadFragment(const ManifestState& st, size_t frag_index, uint64_t lo, uint64_t hi,
                            uint8_t* dst);
  // Version 2: elements [lo, hi) of segment `seg_index`, verifying the blocks it fetches.
  absl::Status ReadSegment(const ManifestState& st, size_t seg_index, uint64_t lo, uint64_t hi,
                           uint8_t* dst);
  absl::Status WithHint(const absl::Status& st) const;

  std::string root_;
  std::string name_;
  Manifest manifest_;
  std::unique_ptr<IoEngine> engine_;
  std::map<uint32_t, std::unique_ptr<FileReader>> readers_;
  std::map<std::string, std::vector<char>> verified_;  // per state, per fragment
  uint64_t bytes_read_ = 0;
};

// Opens the step directory `step_dir` and verifies every fragment.
absl::Status VerifyCheckpoint(const std::string& step_dir, const IoOptions& io = {});

// Rewrites a version 1 manifest of `step_dir` as version 2: streams every segment once, checks
// the version-1 CRC32C of each fragment in it and records block checksums of `block_bytes`,
// then replaces manifest.json atomically (the shard files are not touched). Returns false when
// the manifest already is version 2 (nothing written); DATA_LOSS, nothing written, on a
// checksum mismatch.
absl::StatusOr<bool> UpgradeManifest(const std::string& step_dir,
                                     uint64_t block_bytes = kChecksumBlock,
                                     const IoOptions& io = {});

}  // namespace tern::ckpt
