#include "daemon/http/tensorboard.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <climits>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "daemon/state/coordinator.h"

namespace tern::daemon {
namespace {

std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // Castagnoli
    t[i] = c;
  }
  return t;
}

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

template <class T>
void PutFixed(std::string* out, T v) {  // little endian (x86, and the wire format)
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out->append(b, sizeof(T));
}

void PutKey(std::string* out, int field, int wire_type) {
  PutVarint(out, static_cast<uint64_t>(field) << 3 | static_cast<uint64_t>(wire_type));
}

void PutBytes(std::string* out, int field, const std::string& bytes) {
  PutKey(out, field, 2);
  PutVarint(out, bytes.size());
  out->append(bytes);
}

std::string EventHead(double wall_time, int64_t step) {
  std::string e;
  PutKey(&e, 1, 1);  // wall_time: double
  PutFixed(&e, wall_time);
  if (step != 0) {
    PutKey(&e, 2, 0);  // step: int64
    PutVarint(&e, static_cast<uint64_t>(step));
  }
  return e;
}

std::string HostName() {
  char buf[HOST_NAME_MAX + 1] = {};
  return ::gethostname(buf, sizeof(buf) - 1) == 0 ? buf : "localhost";
}

// Metric point -> scalars: "<kind>/<value name>" (kind: train for steps, eval, summary).
Scalars PointScalars(const tern::v1::MetricPoint& p) {
  const std::string group = p.kind() == "step" ? "train" : p.kind();
  std::map<std::string, double> sorted(p.values().begin(), p.values().end());
  Scalars out;
  for (const auto& [k, v] : sorted) out.emplace_back(group + "/" + k, static_cast<float>(v));
  return out;
}

}  // namespace

uint32_t Crc32c(const void* data, size_t n) {
  static const std::array<uint32_t, 256> table = MakeCrcTable();
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t MaskedCrc32c(const void* data, size_t n) {
  const uint32_t c = Crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string EncodeFileVersionEvent(double wall_time) {
  std::string e = EventHead(wall_time, 0);
  PutBytes(&e, 3, "brain.Event:2");
  return e;
}

std::string EncodeScalarEvent(double wall_time, int64_t step, const Scalars& values) {
  std::string summary;
  for (const auto& [tag, v] : values) {
    std::string value;
    PutBytes(&value, 1, tag);
    PutKey(&value, 2, 5);  // simple_value: float
    PutFixed(&value, v);
    PutBytes(&summary, 1, value);
  }
  std::string e = EventHead(wall_time, step);
  PutBytes(&e, 5, summary);
  return e;
}

std::string FrameRecord(const std::string& data) {
  std::string r;
  const uint64_t len = data.size();
  PutFixed(&r, len);
  PutFixed(&r, MaskedCrc32c(r.data(), sizeof(len)));
  r.append(data);
  PutFixed(&r, MaskedCrc32c(data.data(), data.size()));
  return r;
}

absl::StatusOr<std::unique_ptr<TfEventWriter>> TfEventWriter::Open(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot create TensorBoard log dir ", dir, ": ", ec.message()));
  }
  static std::atomic<int> counter{0};
  const double now = static_cast<double>(NowMs()) / 1000.0;
  const std::string path = absl::StrCat(dir, "/events.out.tfevents.", static_cast<int64_t>(now),
                                        ".", HostName(), ".", ::getpid(), ".", counter++);
  FILE* f = std::fopen(path.c_str(), "wbx");  // never append to someone else's file
  if (!f) {
    return absl::UnavailableError(
        absl::StrCat("cannot create TensorBoard event file ", path, ": ", std::strerror(errno)));
  }
  std::unique_ptr<TfEventWriter> w(new TfEventWriter(path, f));
  if (auto st = w->Write(EncodeFileVersionEvent(now)); !st.ok()) return st;
  return w;
}

TfEventWriter::~TfEventWriter() { std::fclose(file_); }

absl::Status TfEventWriter::Write(const std::string& data) {
  const std::string rec = FrameRecord(data);
  if (std::fwrite(rec.data(), 1, rec.size(), file_) != rec.size() || std::fflush(file_) != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot write TensorBoard event file ", path_, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status TfEventWriter::WriteScalars(double wall_time, int64_t step, const Scalars& values) {
  if (values.empty()) return absl::OkStatus();
  return Write(EncodeScalarEvent(wall_time, step, values));
}

std::string TensorBoardLogger::LogDir(const tern::v1::Job& job) const {
  const std::string& dir = job.spec().log_dir();
  if (dir.empty()) return absl::StrCat(state_dir_, "/tensorboard/", job.id());
  return dir.front() == '/' ? dir : absl::StrCat(state_dir_, "/", dir);
}

TfEventWriter* TensorBoardLogger::Writer(const std::string& job_id) {
  auto it = writers_.find(job_id);
  if (it != writers_.end()) return it->second.get();
  if (done_.count(job_id)) return nullptr;
  auto job = coord_->GetJob(job_id);
  if (!job.ok()) return nullptr;
  auto w = TfEventWriter::Open(LogDir(*job));
  if (!w.ok()) {
    spdlog::error("job {}: {}; no TensorBoard events for it", job_id, w.status().ToString());
    done_.insert(job_id);
    return nullptr;
  }
  spdlog::info("job {}: TensorBoard events in {}", job_id, (*w)->path());
  return (writers_[job_id] = std::move(*w)).get();
}

void TensorBoardLogger::Observe(const std::string& job_id, const tern::v1::WatchJobResponse& item) {
  double wall = 0;
  int64_t step = 0;
  Scalars scalars;
  if (item.has_metric()) {
    wall = static_cast<double>(item.metric().time_ms()) / 1000.0;
    step = item.metric().step();
    scalars = PointScalars(item.metric());
  } else if (item.has_event() && item.event().kind() == "checkpoint") {
    auto j = nlohmann::json::parse(item.event().message(), nullptr, /*allow_exceptions=*/false);
    wall = static_cast<double>(item.event().time_ms()) / 1000.0;
    if (j.is_object()) {
      if (j.contains("step") && j["step"].is_number_integer()) step = j["step"].get<int64_t>();
      for (const char* k : {"bytes", "gibps", "seconds"}) {
        if (j.contains(k) && j[k].is_number()) {
          scalars.emplace_back(absl::StrCat("checkpoint/", k), j[k].get<float>());
        }
      }
    }
  }
  if (!scalars.empty()) {
    if (TfEventWriter* w = Writer(job_id)) {
      if (auto st = w->WriteScalars(wall, step, scalars); !st.ok()) {
        spdlog::error("job {}: {}; no more TensorBoard events for it", job_id, st.ToString());
        writers_.erase(job_id);
        done_.insert(job_id);
      }
    }
  }
  if (item.has_event() && IsTerminal(item.event().state())) {
    writers_.erase(job_id);
    done_.insert(job_id);
    while (done_.size() > 4096) done_.erase(done_.begin());
  }
}

}  // namespace tern::daemon
