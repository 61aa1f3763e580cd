// Loading a committed checkpoint through its manifest (the universal index): any range of any
// state, assembled from fragments across rank files, each fragment's CRC32C verified once.
// Loading into a different data/sequence-parallel layout is just different ReadState ranges.
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
  // (numel * element size bytes). Fragments not yet verified are read whole once and their
  // CRC32C checked: mismatch -> DATA_LOSS, missing file -> NOT_FOUND, both naming the file,
  // the parameter and the state.
  absl::Status ReadState(const std::string& state, uint64_t global_offset, uint64_t numel,
                         void* dst);
  // Reads and checks every fragment of every state.
  absl::Status Verify();

  uint64_t bytes_read() const { return bytes_read_; }

 private:
  Checkpoint() = default;
  absl::StatusOr<FileReader*> Reader(uint32_t file);
  absl::Status ReadFragment(const ManifestState& st, size_t frag_index, uint64_t lo, uint64_t hi,
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

}  // namespace tern::ckpt
