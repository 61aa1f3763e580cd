#include "worker/checkpoint/manifest.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "worker/checkpoint/fs_util.h"
#include "worker/core/status.h"

namespace tern::ckpt {
namespace fs = std::filesystem;

namespace {

// Sorts each state's fragments and checks overlap and (optionally) coverage of the table.
absl::Status CheckStates(std::vector<ManifestState>* states, const ParamTable& table,
                         const std::vector<ManifestFile>& files, bool full_coverage) {
  const auto& entries = table.entries();
  for (auto& st : *states) {
    std::sort(st.fragments.begin(), st.fragments.end(),
              [](const ManifestFragment& a, const ManifestFragment& b) {
                return a.global_offset < b.global_offset;
              });
    uint64_t covered = 0;  // end of the previous fragment
    for (const auto& f : st.fragments) {
      const ParamEntry& p = entries[f.param];
      if (f.global_offset < covered) {
        return absl::InvalidArgumentError(absl::StrCat(
            "state '", st.name, "': fragment [", f.global_offset, ", ", f.global_offset + f.numel,
            ") of param '", p.name, "' in ", files[f.file].name,
            " overlaps an earlier fragment (two ranks saved the same elements)"));
      }
      if (full_coverage && f.global_offset > covered) break;  // reported below
      covered = f.global_offset + f.numel;
    }
    if (!full_coverage) continue;
    uint64_t pos = 0;
    for (const auto& f : st.fragments) {
      if (f.global_offset != pos) break;
      pos += f.numel;
    }
    if (pos != table.total()) {
      auto it = std::upper_bound(entries.begin(), entries.end(), pos,
                                 [](uint64_t v, const ParamEntry& e) { return v < e.offset; });
      const ParamEntry& p = *(it - 1);
      return absl::InvalidArgumentError(
          absl::StrCat("state '", st.name, "': no rank saved elements from ", pos, " (param '",
                       p.name, "'); the shards cover [0, ", pos, ") of ", table.total(),
                       " --> hint: every element of every state must be in exactly one segment"));
    }
  }
  return absl::OkStatus();
}

// Builds the manifest body from the gathered shard results.
absl::StatusOr<Manifest> BuildManifest(int64_t step, const std::vector<RankShardResult>& shards,
                                       const ParamTable& table, const CommitOptions& options) {
  Manifest m;
  m.step = step;
  m.created_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  m.world = options.world;
  m.extra = options.extra;
  m.params = table;
  std::set<std::string> names;
  std::map<std::string, size_t> state_index;
  const auto& entries = table.entries();
  for (const auto& sh : shards) {
    if (!names.insert(sh.file).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("two shard results name the same file ", sh.file));
    }
    const auto file_idx = static_cast<uint32_t>(m.files.size());
    m.files.push_back({sh.file, sh.rank, sh.size});
    for (const auto& seg : sh.segments) {
      const uint32_t es = DtypeBytes(seg.dtype);
      if (es == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(sh.file, ": state '", seg.state, "' has unknown dtype ", seg.dtype));
      }
      auto [it, added] = state_index.emplace(seg.state, m.states.size());
      if (added) m.states.push_back({seg.state, seg.dtype, es, seg.block_bytes, {}, {}});
      ManifestState& st = m.states[it->second];
      if (st.dtype != seg.dtype || st.block_bytes != seg.block_bytes) {
        return absl::InvalidArgumentError(
            absl::StrCat("state '", seg.state, "' is ", st.dtype, " in blocks of ", st.block_bytes,
                         " bytes in one shard and ", seg.dtype, " in blocks of ", seg.block_bytes,
                         " in ", sh.file));
      }
      const uint64_t bytes = seg.numel * es;
      if (seg.block_bytes == 0 || seg.block_bytes % kAlign != 0 ||
          seg.block_crc32c.size() != (bytes + seg.block_bytes - 1) / seg.block_bytes ||
          seg.file_offset + bytes > sh.size || seg.global_offset + seg.numel > table.total()) {
        return absl::InvalidArgumentError(absl::StrCat(
            sh.file, ": segment of state '", seg.state, "' at element ", seg.global_offset, " has ",
            seg.block_crc32c.size(), " block checksums of ", seg.block_bytes, " bytes for ", bytes,
            " bytes, or does not fit the file (", sh.size, " bytes) or the table"));
      }
      st.segments.push_back(
          {file_idx, seg.file_offset, seg.global_offset, seg.numel, seg.block_crc32c});
      for (const auto& f : seg.fragments) {
        const bool bad_param = f.param >= entries.size();
        if (bad_param || f.global_offset < entries[f.param].offset ||
            f.global_offset + f.numel > entries[f.param].offset + entries[f.param].numel ||
            f.file_offset + f.numel * es > sh.size) {
          return absl::InvalidArgumentError(absl::StrCat(
              sh.file, ": fragment of state '", seg.state, "' at element ", f.global_offset,
              " does not fit its parameter (", bad_param ? "?" : entries[f.param].name,
              ") or the file size ", sh.size));
        }
        st.fragments.push_back(
            {file_idx, f.param, f.file_offset, f.global_offset, f.numel, f.crc32c});
      }
    }
  }
  TERN_RETURN_IF_ERROR(CheckStates(&m.states, table, m.files, options.require_full_coverage));
  for (auto& st : m.states) {
    std::sort(st.segments.begin(), st.segments.end(),
              [](const ManifestSegment& a, const ManifestSegment& b) {
                return a.global_offset < b.global_offset;
              });
  }
  return m;
}

}  // namespace

std::vector<ManifestFragment> FragmentsOf(const ManifestSegment& seg, uint32_t elem_bytes,
                                          const ParamTable& table) {
  std::vector<ManifestFragment> out;
  const auto& entries = table.entries();
  const uint64_t end = seg.global_offset + seg.numel;
  if (seg.numel == 0 || end > table.total()) return out;
  auto it = std::upper_bound(entries.begin(), entries.end(), seg.global_offset,
                             [](uint64_t v, const ParamEntry& e) { return v < e.offset; });
  size_t i = static_cast<size_t>(it - entries.begin()) - 1;
  for (uint64_t pos = seg.global_offset; pos < end && i < entries.size(); ++i) {
    const ParamEntry& e = entries[i];
    if (e.numel == 0) continue;
    const uint64_t hi = std::min(end, e.offset + e.numel);
    out.push_back({seg.file, static_cast<uint32_t>(i),
                   seg.file_offset + (pos - seg.global_offset) * elem_bytes, pos, hi - pos, 0});
    pos = hi;
  }
  return out;
}

namespace {

absl::Status RemoveDir(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) return ErrnoStatus(ec.value(), "remove", path);
  return absl::OkStatus();
}

std::string ReadLatestName(const std::string& root) {
  auto text = ReadSmallFile(root + "/" + kLatestName);
  if (!text.ok()) return "";
  std::string s = *text;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

namespace {

// flock on <root>/.round.lock for the lifetime of the object.
class RoundLock {
 public:
  static absl::StatusOr<std::unique_ptr<RoundLock>> Take(const std::string& root) {
    const std::string path = root + "/.round.lock";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoStatus(errno, "open", path);
    while (::flock(fd, LOCK_EX) != 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return ErrnoStatus(err, "lock", path);
    }
    return std::unique_ptr<RoundLock>(new RoundLock(fd));
  }
  ~RoundLock() { ::close(fd_); }  // releases the lock

 private:
  explicit RoundLock(int fd) : fd_(fd) {}
  int fd_;
};

// The round recorded in <root>/round; -1 when none.
int64_t RecordedRound(const std::string& root) {
  auto text = ReadSmallFile(root + "/round", 64);
  int64_t r = -1;
  if (!text.ok() || !absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &r)) return -1;
  return r;
}

}  // namespace

absl::Status ClaimRound(const std::string& root, int64_t round) {
  TERN_ASSIGN_OR_RETURN(auto lock, RoundLock::Take(root));
  const int64_t held = RecordedRound(root);
  if (held > round)
    return absl::FailedPreconditionError(absl::StrCat("checkpoint.dir ", root, " belongs to round ",
                                                      held, " of this job; round ", round,
                                                      " is stale"));
  if (held == round) return absl::OkStatus();
  return WriteFileAtomic(root + "/round", absl::StrCat(round, "\n"));
}

absl::Status CommitManifest(const std::string& root, int64_t step,
                            const std::vector<RankShardResult>& shards, const ParamTable& table,
                            const CommitOptions& options) {
  std::unique_ptr<RoundLock> fence;
  if (options.round >= 0) {
    TERN_ASSIGN_OR_RETURN(fence, RoundLock::Take(root));
    const int64_t held = RecordedRound(root);
    if (held != options.round)
      return absl::FailedPreconditionError(
          absl::StrCat("checkpoint ", StepDirName(step), " of round ", options.round,
                       " not committed: round ", held, " now holds ", root, " (fenced)"));
  }
  const std::string name = StepDirName(step);
  const std::string dir = root + "/" + name;
  TERN_ASSIGN_OR_RETURN(Manifest m, BuildManifest(step, shards, table, options));
  if (options.check_files) TERN_RETURN_IF_ERROR(CheckManifestFiles(dir, m));
  const std::string text = ManifestToJson(m).dump(1);
  TERN_RETURN_IF_ERROR(WriteFileAtomic(dir + "/" + kManifestName, text, "before_manifest_rename"));
  MaybeFault("after_manifest_rename_before_latest");
  TERN_RETURN_IF_ERROR(WriteFileAtomic(root + "/" + kLatestName, name + "\n"));
  if (options.keep_last > 0) {
    TERN_ASSIGN_OR_RETURN(auto removed, ApplyRetention(root, options.keep_last));
    (void)removed;
  }
  return absl::OkStatus();
}

absl::Status SaveCheckpointLocal(const std::string& root, int64_t step,
                                 const std::vector<std::vector<Segment>>& rank_segments,
                                 const ParamTable& table, const CommitOptions& commit,
                                 const WriterOptions& writer) {
  WriterOptions w = writer;
  std::unique_ptr<IoEngine> engine;
  if (w.engine == nullptr) {  // one engine: its buffers are reused by every simulated rank
    TERN_ASSIGN_OR_RETURN(engine, IoEngine::Create(w.io));
    w.engine = engine.get();
  }
  std::vector<RankShardResult> results;
  for (size_t r = 0; r < rank_segments.size(); ++r) {
    TERN_ASSIGN_OR_RETURN(RankShardResult res, WriteRankShard(root, step, static_cast<int>(r),
                                                              rank_segments[r], table, w));
    results.push_back(std::move(res));
  }
  return CommitManifest(root, step, results, table, commit);
}

absl::Status CheckManifestFiles(const std::string& step_dir, const Manifest& m) {
  for (const auto& f : m.files) {
    const std::string path = step_dir + "/" + f.name;
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      return absl::NotFoundError(
          absl::StrCat("checkpoint file ", path, " (rank ", f.rank, ") is missing"));
    }
    if (static_cast<uint64_t>(st.st_size) != f.size) {
      return absl::DataLossError(absl::StrCat("checkpoint file ", path, " has ", st.st_size,
                                              " bytes, the manifest says ", f.size));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<StepInfo>> ListCheckpoints(const std::string& root) {
  std::vector<StepInfo> out;
  std::error_code ec;
  if (!fs::exists(root, ec)) return out;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    const int64_t step = ParseStepDirName(name);
    if (step < 0 || !entry.is_directory(ec)) continue;
    StepInfo info;
    info.name = name;
    info.step = step;
    for (const auto& f : fs::directory_iterator(entry.path(), ec)) {
      if (!f.is_regular_file(ec)) continue;
      info.bytes += f.file_size(ec);
      ++info.files;
    }
    auto m = ReadManifest(entry.path().string());
    if (!m.ok()) {
      info.problem = std::string(m.status().message());
    } else if (m->step != step) {
      info.problem = absl::StrCat("manifest says step ", m->step);
    } else if (auto st = CheckManifestFiles(entry.path().string(), *m); !st.ok()) {
      info.problem = std::string(st.message());
    }
    info.complete = info.problem.empty();
    out.push_back(std::move(info));
  }
  if (ec) return ErrnoStatus(ec.value(), "list", root);
  std::sort(out.begin(), out.end(),
            [](const StepInfo& a, const StepInfo& b) { return a.step < b.step; });
  return out;
}

absl::StatusOr<std::vector<std::string>> CleanupIncomplete(const std::string& root) {
  TERN_ASSIGN_OR_RETURN(auto steps, ListCheckpoints(root));
  int64_t newest_complete = -1;
  for (const auto& s : steps)
    if (s.complete) newest_complete = std::max(newest_complete, s.step);
  std::vector<std::string> removed;
  for (const auto& s : steps) {
    if (s.complete || s.step >= newest_complete) continue;
    TERN_RETURN_IF_ERROR(RemoveDir(root + "/" + s.name));
    removed.push_back(s.name);
  }
  return removed;
}

absl::StatusOr<std::vector<std::string>> ApplyRetention(const std::string& root, int keep_last) {
  if (keep_last <= 0) return absl::InvalidArgumentError("keep_last must be positive");
  TERN_ASSIGN_OR_RETURN(std::vector<std::string> removed, CleanupIncomplete(root));
  TERN_ASSIGN_OR_RETURN(auto steps, ListCheckpoints(root));
  const std::string latest = ReadLatestName(root);
  int kept = 0;
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    if (!it->complete) continue;
    if (kept++ < keep_last || it->name == latest) continue;
    TERN_RETURN_IF_ERROR(RemoveDir(root + "/" + it->name));
    removed.push_back(it->name);
  }
  return removed;
}

absl::StatusOr<std::vector<std::string>> SetAsideNewerThan(const std::string& root, int64_t step) {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
  std::vector<std::string> newer, moved;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    if (ParseStepDirName(name) > step) newer.push_back(name);
  }
  if (ec) return ErrnoStatus(ec.value(), "list", root);
  std::sort(newer.begin(), newer.end());
  for (const auto& name : newer) {
    const std::string to = absl::StrCat(name, ".set-aside-", stamp);
    fs::rename(fs::path(root) / name, fs::path(root) / to, ec);
    if (ec) return ErrnoStatus(ec.value(), "rename", root + "/" + name);
    moved.push_back(to);
  }
  TERN_RETURN_IF_ERROR(WriteFileAtomic(root + "/" + kLatestName, StepDirName(step) + "\n"));
  return moved;
}

std::string CompleteHint(const std::string& root, const std::string& exclude) {
  auto steps = ListCheckpoints(root);
  if (steps.ok()) {
    for (auto it = steps->rbegin(); it != steps->rend(); ++it) {
      if (it->complete && it->name != exclude) {
        return absl::StrCat("--> hint: ", it->name,
                            " is complete: resume from it with --set checkpoint.load=", it->name,
                            " (newer steps are set aside, not deleted)");
      }
    }
  }
  return absl::StrCat("--> hint: no other complete checkpoint under ", root);
}

}  // namespace tern::ckpt
