// TensorBoard event files: each job's scalar metrics as events.out.tfevents.* records, so
// `tensorboard --logdir <state-dir>/tensorboard` shows every job as a run.
//
// File format (TensorFlow's TFRecord + event.proto/summary.proto, hand-encoded): each record
// is uint64 length (little endian), uint32 masked CRC32C of those 8 bytes, the data, uint32
// masked CRC32C of the data; masked = ((crc >> 15) | (crc << 17)) + 0xa282ead8. The data is
// an Event: wall_time (1, double), step (2, int64), file_version (3, string) or summary
// (5, Summary{value (1): {tag (1), simple_value (2, float)}}). The first record is
// file_version "brain.Event:2".
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "tern/v1/cluster.pb.h"

namespace tern::daemon {

class Coordinator;

uint32_t Crc32c(const void* data, size_t n);
uint32_t MaskedCrc32c(const void* data, size_t n);

using Scalars = std::vector<std::pair<std::string, float>>;

// Encodings, exposed for tests.
std::string EncodeFileVersionEvent(double wall_time);
std::string EncodeScalarEvent(double wall_time, int64_t step, const Scalars& values);
std::string FrameRecord(const std::string& data);

// Appends records to one new event file in `dir` (created if missing). Not thread-safe.
class TfEventWriter {
 public:
  static absl::StatusOr<std::unique_ptr<TfEventWriter>> Open(const std::string& dir);
  ~TfEventWriter();

  // One Event with every value; flushed to the OS so TensorBoard sees it at once.
  absl::Status WriteScalars(double wall_time, int64_t step, const Scalars& values);
  const std::string& path() const { return path_; }

 private:
  TfEventWriter(std::string path, FILE* file) : path_(std::move(path)), file_(file) {}
  absl::Status Write(const std::string& data);

  std::string path_;
  FILE* file_;
};

// MetricsHub observer: writes each job's metric points (train/*, eval/*, summary/*) and
// checkpoint events (checkpoint/*) to the job's event file, opened at its first item and
// closed when the job ends. The log dir is the spec's `log_dir` (relative paths under the
// state dir) or <state_dir>/tensorboard/<job id>. Owned by the EventLoop thread.
class TensorBoardLogger {
 public:
  TensorBoardLogger(std::string state_dir, const Coordinator* coord)
      : state_dir_(std::move(state_dir)), coord_(coord) {}

  void Observe(const std::string& job_id, const tern::v1::WatchJobResponse& item);
  std::string LogDir(const tern::v1::Job& job) const;

 private:
  TfEventWriter* Writer(const std::string& job_id);

  const std::string state_dir_;
  const Coordinator* coord_;
  std::map<std::string, std::unique_ptr<TfEventWriter>> writers_;
  std::set<std::string> done_;  // ended or failed: never reopened
};

}  // namespace tern::daemon
