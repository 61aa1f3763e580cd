#include "worker/checkpoint/shard_writer.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "worker/checkpoint/fs_util.h"
#include "worker/core/status.h"

namespace tern::ckpt {

uint32_t DtypeBytes(const std::string& dtype) {
  if (dtype == "f32" || dtype == "i32") return 4;
  if (dtype == "bf16" || dtype == "f16") return 2;
  if (dtype == "f64" || dtype == "i64") return 8;
  if (dtype == "u8" || dtype == "i8") return 1;
  return 0;
}

nlohmann::json RankShardResult::ToJson() const {
  nlohmann::json segs = nlohmann::json::array();
  for (const auto& s : segments) {
    nlohmann::json frags = nlohmann::json::array();
    for (const auto& f : s.fragments) {
      frags.push_back({{"param", f.param},
                       {"global_offset", f.global_offset},
                       {"numel", f.numel},
                       {"file_offset", f.file_offset},
                       {"crc32c", f.crc32c}});
    }
    segs.push_back({{"state", s.state},
                    {"dtype", s.dtype},
                    {"global_offset", s.global_offset},
                    {"numel", s.numel},
                    {"file_offset", s.file_offset},
                    {"block_bytes", s.block_bytes},
                    {"block_crc32c", s.block_crc32c},
                    {"fragments", std::move(frags)}});
  }
  return {{"rank", rank},
          {"file", file},
          {"size", size},
          {"io_path", io_path},
          {"write_seconds", write_seconds},
          {"segments", std::move(segs)}};
}

absl::StatusOr<RankShardResult> RankShardResult::FromJson(const nlohmann::json& j) {
  RankShardResult r;
  try {
    r.rank = j.at("rank").get<int>();
    r.file = j.at("file").get<std::string>();
    r.size = j.at("size").get<uint64_t>();
    r.io_path = j.value("io_path", "");
    r.write_seconds = j.value("write_seconds", 0.0);
    for (const auto& js : j.at("segments")) {
      SegmentRecord s;
      s.state = js.at("state").get<std::string>();
      s.dtype = js.at("dtype").get<std::string>();
      s.global_offset = js.at("global_offset").get<uint64_t>();
      s.numel = js.at("numel").get<uint64_t>();
      s.file_offset = js.at("file_offset").get<uint64_t>();
      s.block_bytes = js.value("block_bytes", uint64_t{0});
      s.block_crc32c = js.value("block_crc32c", std::vector<uint32_t>{});
      for (const auto& jf : js.at("fragments")) {
        FragmentRecord f;
        f.param = jf.at("param").get<uint32_t>();
        f.global_offset = jf.at("global_offset").get<uint64_t>();
        f.numel = jf.at("numel").get<uint64_t>();
        f.file_offset = jf.at("file_offset").get<uint64_t>();
        f.crc32c = jf.value("crc32c", uint32_t{0});
        s.fragments.push_back(f);
      }
      r.segments.push_back(std::move(s));
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("bad RankShardResult JSON: ", e.what()));
  }
  return r;
}

absl::StatusOr<std::vector<uint64_t>> SegmentFileOffsets(const std::vector<Segment>& segments,
                                                         uint64_t* total_size) {
  std::vector<uint64_t> offsets;
  uint64_t pos = 0;
  for (const auto& s : segments) {
    const uint32_t es = DtypeBytes(s.dtype);
    if (es == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("segment of state '", s.state, "': unknown dtype '", s.dtype, "'"));
    }
    pos = AlignUp(pos);
    offsets.push_back(pos);
    pos += s.numel * es;
  }
  *total_size = pos;
  return offsets;
}

namespace {

// Cuts [go, go + numel) at parameter boundaries; fails if it leaves the table.
absl::Status CutIntoFragments(const Segment& seg, const ParamTable& table,
                              std::vector<FragmentRecord>* out) {
  const auto& entries = table.entries();
  const uint64_t end = seg.global_offset + seg.numel;
  if (end > table.total() || seg.numel == 0 || seg.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "segment of state '", seg.state, "' [", seg.global_offset, ", ", end,
        ") is empty, has no data, or exceeds the parameter table (", table.total(), " elements)"));
  }
  auto it = std::upper_bound(entries.begin(), entries.end(), seg.global_offset,
                             [](uint64_t v, const ParamEntry& e) { return v < e.offset; });
  size_t i = static_cast<size_t>(it - entries.begin()) - 1;  // entries[0].offset == 0
  for (uint64_t pos = seg.global_offset; pos < end; ++i) {
    TERN_CHECK(i < entries.size()) << "param table does not cover " << pos;
    const ParamEntry& e = entries[i];
    if (e.numel == 0) continue;
    const uint64_t hi = std::min(end, e.offset + e.numel);
    FragmentRecord f;
    f.param = static_cast<uint32_t>(i);
    f.global_offset = pos;
    f.numel = hi - pos;
    out->push_back(f);
    pos = hi;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RankShardResult> WriteRankShard(const std::string& root, int64_t step, int rank,
                                               const std::vector<Segment>& segments,
                                               const ParamTable& table,
                                               const WriterOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string dir = root + "/" + StepDirName(step);
  struct stat st;
  if (::stat((dir + "/manifest.json").c_str(), &st) == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir, " already holds a committed checkpoint; refusing to overwrite it ",
                     "--> hint: save under a new step or delete that directory"));
  }
  const uint64_t cb = options.checksum_block;
  if (cb == 0 || cb % kAlign != 0) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint checksum block ", cb,
                                                   " bytes must be a positive multiple of 4096"));
  }
  TERN_RETURN_IF_ERROR(MakeDirs(dir));
  uint64_t total = 0;
  TERN_ASSIGN_OR_RETURN(std::vector<uint64_t> offsets, SegmentFileOffsets(segments, &total));

  RankShardResult result;
  result.rank = rank;
  result.file = RankFileName(rank);
  for (const auto& seg : segments) {
    SegmentRecord rec;
    rec.state = seg.state;
    rec.dtype = seg.dtype;
    rec.global_offset = seg.global_offset;
    rec.numel = seg.numel;
    TERN_RETURN_IF_ERROR(CutIntoFragments(seg, table, &rec.fragments));
    result.segments.push_back(std::move(rec));
  }
  WriterOptions wopts = options;
  wopts.expected_size = total;
  const std::string path = dir + "/" + result.file;
  TERN_ASSIGN_OR_RETURN(auto writer, FileWriter::Open(path, wopts));
  for (size_t s = 0; s < segments.size(); ++s) {
    SegmentRecord& rec = result.segments[s];
    const uint32_t es = DtypeBytes(segments[s].dtype);
    const uint64_t bytes = segments[s].numel * es;
    std::vector<uint64_t> blocks;  // checksum blocks from the segment's start
    for (uint64_t pos = 0; pos < bytes; pos += cb) blocks.push_back(std::min(cb, bytes - pos));
    TERN_ASSIGN_OR_RETURN(AppendResult ar, writer->Append(segments[s].data, bytes, blocks));
    TERN_CHECK(ar.file_offset == offsets[s]) << ar.file_offset << " vs " << offsets[s];
    rec.file_offset = ar.file_offset;
    rec.block_bytes = cb;
    rec.block_crc32c = std::move(ar.piece_crc);
    uint64_t off = ar.file_offset;
    for (auto& f : rec.fragments) {
      f.file_offset = off;
      off += f.numel * es;
    }
  }
  TERN_ASSIGN_OR_RETURN(result.size, writer->Finish());
  result.io_path = IoPathName(writer->io_path());
  result.write_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MaybeFault("after_shard_write");
  return result;
}

}  // namespace tern::ckpt
