#include "worker/checkpoint/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <tuple>

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

// Version 2: fetches the checksum blocks of segment `seg_index` that overlap elements [lo, hi),
// verifies each, and copies [lo, hi) into dst (null: verify only).
absl::Status Checkpoint::ReadSegment(const ManifestState& st, size_t seg_index, uint64_t lo,
                                     uint64_t hi, uint8_t* dst) {
  const ManifestSegment& g = st.segments[seg_index];
  const uint64_t es = st.elem_bytes, bb = st.block_bytes;
  const uint64_t seg_bytes = g.numel * es;
  const uint64_t want_lo = (lo - g.global_offset) * es, want_hi = (hi - g.global_offset) * es;
  const uint64_t k0 = want_lo / bb;
  const uint64_t from = k0 * bb, to = std::min(seg_bytes, (want_hi + bb - 1) / bb * bb);
  const std::string& file = manifest_.files[g.file].name;
  const auto& entries = manifest_.params.entries();
  auto param_at = [&](uint64_t elem) {
    auto it = std::upper_bound(entries.begin(), entries.end(), elem,
                               [](uint64_t v, const ParamEntry& e) { return v < e.offset; });
    return (it - 1)->name;
  };
  // Names the block, its bytes, and the parameters from element `first` to `last`.
  auto where = [&](uint64_t k, uint64_t first, uint64_t last) {
    const std::string a = param_at(first), b = param_at(last);
    return absl::StrCat(" (state '", st.name, "', block ", k, " = bytes [", g.file_offset + k * bb,
                        ", ", g.file_offset + std::min(seg_bytes, (k + 1) * bb), ") of ", file,
                        ", param '", a, a == b ? "'" : absl::StrCat("' .. '", b, "'"),
                        " at element ", first, ")");
  };
  auto block_where = [&](uint64_t k) {
    return where(k, g.global_offset + k * bb / es,
                 g.global_offset + (std::min(seg_bytes, (k + 1) * bb) - 1) / es);
  };
  auto reader = Reader(g.file);
  if (!reader.ok()) {
    return WithHint(absl::Status(reader.status().code(),
                                 absl::StrCat(reader.status().message(), where(k0, lo, hi - 1))));
  }
  uint64_t pos = from;  // segment byte the next delivered byte is
  uint32_t crc = 0;
  absl::Status bad;
  absl::Status io =
      (*reader)->Stream(g.file_offset + from, to - from, [&](const uint8_t* p, uint64_t n) {
        const uint64_t a = std::max(pos, want_lo), b = std::min(pos + n, want_hi);
        if (dst != nullptr && a < b) std::memcpy(dst + (a - want_lo), p + (a - pos), b - a);
        while (n > 0) {  // checksum block by block
          const uint64_t k = pos / bb;
          const uint64_t block_end = std::min(seg_bytes, (k + 1) * bb);
          const uint64_t take = std::min(n, block_end - pos);
          crc = Crc32cExtend(crc, p, take);
          p += take;
          n -= take;
          pos += take;
          if (pos == block_end) {
            if (crc != g.block_crc32c[k] && bad.ok()) {
              bad = absl::DataLossError(absl::StrCat("checksum mismatch in ", dir(), "/", file,
                                                     block_where(k), ": crc32c ", crc,
                                                     ", manifest says ", g.block_crc32c[k]));
            }
            crc = 0;
          }
        }
      });
  bytes_read_ += to - from;
  if (!io.ok()) {
    return WithHint(absl::Status(io.code(), absl::StrCat(io.message(), where(k0, lo, hi - 1))));
  }
  if (!bad.ok()) return WithHint(bad);
  return absl::OkStatus();
}

absl::StatusOr<const ManifestState*> Checkpoint::FindState(const std::string& state) const {
  for (const auto& s : manifest_.states)
    if (s.name == state) return &s;
  std::string names;
  for (const auto& s : manifest_.states) absl::StrAppend(&names, names.empty() ? "" : ", ", s.name);
  return absl::NotFoundError(
      absl::StrCat(dir(), " has no state '", state, "' (it has: ", names, ")"));
}

namespace {

// Calls fn(index, lo, hi) for every item (segment or fragment, sorted by global_offset) that
// overlaps [begin, end), with the overlap; NOT_FOUND naming the first element not covered.
template <typename Item, typename Fn>
absl::Status ForEachOverlap(const std::vector<Item>& items, uint64_t begin, uint64_t end,
                            const std::string& what, Fn fn) {
  auto it = std::upper_bound(items.begin(), items.end(), begin, [](uint64_t v, const Item& f) {
    return v < f.global_offset + f.numel;
  });
  uint64_t pos = begin;
  for (; pos < end && it != items.end() && it->global_offset <= pos; ++it) {
    const uint64_t hi = std::min(end, it->global_offset + it->numel);
    TERN_RETURN_IF_ERROR(fn(static_cast<size_t>(it - items.begin()), pos, hi));
    pos = hi;
  }
  if (pos < end) {
    return absl::NotFoundError(absl::StrCat(what, " has no saved data for element ", pos));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Checkpoint::ReadState(const std::string& state, uint64_t global_offset, uint64_t numel,
                                   void* dst) {
  TERN_ASSIGN_OR_RETURN(const ManifestState* st, FindState(state));
  const uint64_t end = global_offset + numel;
  if (end > manifest_.params.total()) {
    return absl::OutOfRangeError(absl::StrCat("ReadState('", state, "', ", global_offset, ", ",
                                              numel, "): the state has ", manifest_.params.total(),
                                              " elements"));
  }
  auto* out = static_cast<uint8_t*>(dst);
  const std::string what = absl::StrCat(dir(), ": state '", state, "'");
  auto copy_to = [&](uint64_t lo) { return out + (lo - global_offset) * st->elem_bytes; };
  if (manifest_.version >= 2) {
    return ForEachOverlap(st->segments, global_offset, end, what,
                          [&](size_t i, uint64_t lo, uint64_t hi) {
                            return ReadSegment(*st, i, lo, hi, copy_to(lo));
                          });
  }
  return ForEachOverlap(st->fragments, global_offset, end, what,
                        [&](size_t i, uint64_t lo, uint64_t hi) {
                          return ReadFragment(*st, i, lo, hi, copy_to(lo));
                        });
}

absl::StatusOr<std::vector<ReadExtent>> Checkpoint::PlanRead(const std::string& state,
                                                             uint64_t global_offset,
                                                             uint64_t numel) const {
  TERN_ASSIGN_OR_RETURN(const ManifestState* st, FindState(state));
  std::vector<ReadExtent> out;
  const uint64_t es = st->elem_bytes;
  const std::string what = absl::StrCat(dir(), ": state '", state, "'");
  if (manifest_.version >= 2) {
    const uint64_t bb = st->block_bytes;
    TERN_RETURN_IF_ERROR(ForEachOverlap(
        st->segments, global_offset, global_offset + numel, what,
        [&](size_t i, uint64_t lo, uint64_t hi) {
          const ManifestSegment& g = st->segments[i];
          const uint64_t from = (lo - g.global_offset) * es / bb * bb;
          const uint64_t to =
              std::min(g.numel * es, ((hi - g.global_offset) * es + bb - 1) / bb * bb);
          out.push_back({g.file, g.file_offset + from, to - from, (hi - lo) * es});
          return absl::OkStatus();
        }));
    return out;
  }
  TERN_RETURN_IF_ERROR(
      ForEachOverlap(st->fragments, global_offset, global_offset + numel, what,
                     [&](size_t i, uint64_t lo, uint64_t hi) {
                       const ManifestFragment& f = st->fragments[i];
                       out.push_back({f.file, f.file_offset, f.numel * es, (hi - lo) * es});
                       return absl::OkStatus();
                     }));
  return out;
}

absl::Status Checkpoint::Verify() {
  for (const auto& st : manifest_.states) {
    if (manifest_.version >= 2) {
      for (size_t i = 0; i < st.segments.size(); ++i) {
        const auto& g = st.segments[i];
        TERN_RETURN_IF_ERROR(ReadSegment(st, i, g.global_offset, g.global_offset + g.numel,
                                         /*dst=*/nullptr));
      }
      continue;
    }
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

namespace tern::ckpt {

absl::StatusOr<bool> UpgradeManifest(const std::string& step_dir, uint64_t block_bytes,
                                     const IoOptions& io) {
  if (block_bytes == 0 || block_bytes % kAlign != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("block size ", block_bytes, " must be a positive multiple of 4096"));
  }
  TERN_ASSIGN_OR_RETURN(Manifest m, ReadManifest(step_dir));
  if (m.version >= 2) return false;
  TERN_RETURN_IF_ERROR(CheckManifestFiles(step_dir, m));
  TERN_ASSIGN_OR_RETURN(auto engine, IoEngine::Create(io));
  std::map<uint32_t, std::unique_ptr<FileReader>> readers;
  for (auto& st : m.states) {
    const uint64_t es = st.elem_bytes;
    std::vector<ManifestFragment> frags = st.fragments;  // by file position
    std::sort(frags.begin(), frags.end(), [](const ManifestFragment& a, const ManifestFragment& b) {
      return std::tie(a.file, a.file_offset) < std::tie(b.file, b.file_offset);
    });
    for (size_t i = 0; i < frags.size();) {
      // A segment: fragments contiguous both in the file and in the state.
      size_t j = i + 1;
      while (j < frags.size() && frags[j].file == frags[i].file &&
             frags[j].file_offset == frags[j - 1].file_offset + frags[j - 1].numel * es &&
             frags[j].global_offset == frags[j - 1].global_offset + frags[j - 1].numel) {
        ++j;
      }
      ManifestSegment g;
      g.file = frags[i].file;
      g.file_offset = frags[i].file_offset;
      g.global_offset = frags[i].global_offset;
      for (size_t k = i; k < j; ++k) g.numel += frags[k].numel;
      const std::string path = step_dir + "/" + m.files[g.file].name;
      if (!readers.count(g.file)) {
        TERN_ASSIGN_OR_RETURN(readers[g.file], FileReader::Open(path, engine.get()));
      }
      uint64_t pos = 0;  // segment byte
      size_t frag = i;
      uint64_t frag_end = frags[i].numel * es;
      uint32_t fcrc = 0, bcrc = 0;
      absl::Status bad;
      const uint64_t seg_bytes = g.numel * es;
      TERN_RETURN_IF_ERROR(
          readers[g.file]->Stream(g.file_offset, seg_bytes, [&](const uint8_t* p, uint64_t n) {
            while (n > 0) {
              const uint64_t block_end = std::min(seg_bytes, (pos / block_bytes + 1) * block_bytes);
              const uint64_t take = std::min({n, block_end - pos, frag_end - pos});
              fcrc = Crc32cExtend(fcrc, p, take);
              bcrc = Crc32cExtend(bcrc, p, take);
              p += take;
              n -= take;
              pos += take;
              if (pos == block_end) {
                g.block_crc32c.push_back(bcrc);
                bcrc = 0;
              }
              if (pos == frag_end) {
                if (fcrc != frags[frag].crc32c && bad.ok()) {
                  bad = absl::DataLossError(absl::StrCat(
                      "checksum mismatch in ", path, " (state '", st.name, "', param '",
                      m.params.entries()[frags[frag].param].name, "', bytes [",
                      frags[frag].file_offset, ", ",
                      frags[frag].file_offset + frags[frag].numel * es, ")): not upgraded"));
                }
                fcrc = 0;
                if (++frag < j) frag_end += frags[frag].numel * es;
              }
            }
          }));
      TERN_RETURN_IF_ERROR(bad);
      st.segments.push_back(std::move(g));
      i = j;
    }
    std::sort(st.segments.begin(), st.segments.end(),
              [](const ManifestSegment& a, const ManifestSegment& b) {
                return a.global_offset < b.global_offset;
              });
    st.block_bytes = block_bytes;
  }
  m.version = 2;
  TERN_RETURN_IF_ERROR(WriteFileAtomic(step_dir + "/" + kManifestName, ManifestToJson(m).dump(1)));
  return true;
}

}  // namespace tern::ckpt
