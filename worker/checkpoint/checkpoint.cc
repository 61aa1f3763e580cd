#include "worker/checkpoint/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "worker/checkpoint/crc32c.h"
#include "worker/checkpoint/fs_util.h"
#include "worker/core/status.h"

namespace tern::ckpt {

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& root,
                                                             const std::string& which,
                                                             const IoOptions& io) {
  std::unique_ptr<Checkpoint> c(new Checkpoint());
  c->root_ = root;
  c->name_ = which;
  if (which == kLatestName) {
    auto text = ReadSmallFile(root + "/" + kLatestName);
    if (!text.ok()) {
      return absl::NotFoundError(absl::StrCat("no '", kLatestName, "' file in ", root, " (",
                                              text.status().message(), ") ",
                                              CompleteHint(root, "")));
    }
    std::string s = *text;
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    c->name_ = s;
  }
  if (ParseStepDirName(c->name_) < 0) {
    return absl::InvalidArgumentError(absl::StrCat("'", c->name_, "' (from ", which,
                                                   ") is not a step directory name like "
                                                   "step-000120 ",
                                                   CompleteHint(root, "")));
  }
  auto m = ReadManifest(c->dir());
  if (!m.ok()) return c->WithHint(m.status());
  c->manifest_ = std::move(*m);
  if (c->manifest_.step != ParseStepDirName(c->name_)) {
    return c->WithHint(absl::DataLossError(absl::StrCat(c->dir(), "/manifest.json says step ",
                                                        c->manifest_.step, ", not ", c->name_)));
  }
  if (auto st = CheckManifestFiles(c->dir(), c->manifest_); !st.ok()) return c->WithHint(st);
  TERN_ASSIGN_OR_RETURN(c->engine_, IoEngine::Create(io));
  for (const auto& st : c->manifest_.states) {
    c->verified_[st.name].assign(st.fragments.size(), 0);
  }
  return c;
}

Checkpoint::~Checkpoint() = default;

std::vector<std::string> Checkpoint::states() const {
  std::vector<std::string> out;
  for (const auto& st : manifest_.states) out.push_back(st.name);
  return out;
}

absl::Status Checkpoint::WithHint(const absl::Status& st) const {
  return absl::Status(st.code(), absl::StrCat(st.message(), " ", CompleteHint(root_, name_)));
}

absl::StatusOr<FileReader*> Checkpoint::Reader(uint32_t file) {
  auto it = readers_.find(file);
  if (it != readers_.end()) return it->second.get();
  const std::string path = dir() + "/" + manifest_.files[file].name;
  auto r = FileReader::Open(path, engine_.get());
  if (!r.ok()) return r.status();
  if ((*r)->size() != manifest_.files[file].size) {
    return absl::DataLossError(absl::StrCat("checkpoint file ", path, " has ", (*r)->size(),
                                            " bytes, the manifest says ",
                                            manifest_.files[file].size));
  }
  FileReader* raw = r->get();
  readers_[file] = std::move(*r);
  return raw;
}

// Copies elements [lo, hi) of fragment `frag_index` into dst; verifies the whole fragment
// first if it has not been verified yet.
absl::Status Checkpoint::ReadFragment(const ManifestState& st, size_t frag_index, uint64_t lo,
                                      uint64_t hi, uint8_t* dst) {
  const ManifestFragment& f = st.fragments[frag_index];
  const uint64_t es = st.elem_bytes;
  const std::string& file = manifest_.files[f.file].name;
  const std::string& param = manifest_.params.entries()[f.param].name;
  auto where = [&]() {
    return absl::StrCat(" (state '", st.name, "', param '", param, "', elements [", f.global_offset,
                        ", ", f.global_offset + f.numel, ") at byte ", f.file_offset, " of ", file,
                        ")");
  };
  auto reader = Reader(f.file);
  if (!reader.ok()) {
    return WithHint(
        absl::Status(reader.status().code(), absl::StrCat(reader.status().message(), where())));
  }
  char& verified = verified_[st.name][frag_index];
  absl::Status io;
  if (verified) {
    io = (*reader)->ReadAt(f.file_offset + (lo - f.global_offset) * es, (hi - lo) * es, dst);
    bytes_read_ += (hi - lo) * es;
  } else {
    // Stream the whole fragment: checksum everything, copy out only [lo, hi).
    const uint64_t want_lo = (lo - f.global_offset) * es;
    const uint64_t want_hi = (hi - f.global_offset) * es;
    uint64_t pos = 0;
    uint32_t crc = 0;
    io = (*reader)->Stream(f.file_offset, f.numel * es, [&](const uint8_t* p, uint64_t n) {
      crc = Crc32cExtend(crc, p, n);
      const uint64_t a = std::max(pos, want_lo);
      const uint64_t b = std::min(pos + n, want_hi);
      if (dst != nullptr && a < b) std::memcpy(dst + (a - want_lo), p + (a - pos), b - a);
      pos += n;
    });
    bytes_read_ += f.numel * es;
    if (io.ok() && crc != f.crc32c) {
      return WithHint(
          absl::DataLossError(absl::StrCat("checksum mismatch in ", dir(), "/", file, where(),
                                           ": crc32c ", crc, ", manifest says ", f.crc32c)));
    }
    if (io.ok()) verified = 1;
  }
  if (!io.ok()) return WithHint(absl::Status(io.code(), absl::StrCat(io.message(), where())));
  return absl::OkStatus();
}

absl::Status Checkpoint::ReadState(const std::string& state, uint64_t global_offset, uint64_t numel,
                                   void* dst) {
  const ManifestState* st = nullptr;
  for (const auto& s : manifest_.states)
    if (s.name == state) st = &s;
  if (st == nullptr) {
    std::string names;
    for (const auto& s : manifest_.states)
      absl::StrAppend(&names, names.empty() ? "" : ", ", s.name);
    return absl::NotFoundError(
        absl::StrCat(dir(), " has no state '", state, "' (it has: ", names, ")"));
  }
  const uint64_t end = global_offset + numel;
  if (end > manifest_.params.total()) {
    return absl::OutOfRangeError(absl::StrCat("ReadState('", state, "', ", global_offset, ", ",
                                              numel, "): the state has ", manifest_.params.total(),
                                              " elements"));
  }
  auto* out = static_cast<uint8_t*>(dst);
  const auto& frags = st->fragments;
  // First fragment ending after global_offset.
  auto it = std::upper_bound(
      frags.begin(), frags.end(), global_offset,
      [](uint64_t v, const ManifestFragment& f) { return v < f.global_offset + f.numel; });
  uint64_t pos = global_offset;
  for (; pos < end && it != frags.end() && it->global_offset <= pos; ++it) {
    const uint64_t hi = std::min(end, it->global_offset + it->numel);
    TERN_RETURN_IF_ERROR(ReadFragment(*st, static_cast<size_t>(it - frags.begin()), pos, hi,
                                      out + (pos - global_offset) * st->elem_bytes));
    pos = hi;
  }
  if (pos < end) {
    return absl::NotFoundError(
        absl::StrCat(dir(), ": state '", state, "' has no saved data for element ", pos));
  }
  return absl::OkStatus();
}

absl::Status Checkpoint::Verify() {
  for (const auto& st : manifest_.states) {
    for (size_t i = 0; i < st.fragments.size(); ++i) {
      const auto& f = st.fragments[i];
      if (verified_[st.name][i]) continue;
      TERN_RETURN_IF_ERROR(ReadFragment(st, i, f.global_offset, f.global_offset, /*dst=*/nullptr));
    }
  }
  return absl::OkStatus();
}

absl::Status VerifyCheckpoint(const std::string& step_dir, const IoOptions& io) {
  std::filesystem::path p(step_dir);
  if (p.filename().empty()) p = p.parent_path();
  TERN_ASSIGN_OR_RETURN(auto c,
                        Checkpoint::Open(p.parent_path().string(), p.filename().string(), io));
  return c->Verify();
}

}  // namespace tern::ckpt
