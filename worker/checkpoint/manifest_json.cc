// manifest.json <-> Manifest. Schema (version 2):
// {
//   "format": "tern.checkpoint", "version": 2, "step": 120, "created_unix_ms": 1764412345678,
//   "world": {...caller's layout...},
//   "params": [{"name": "model.embed_tokens.weight", "shape": [256, 64], "offset": 0,
//               "numel": 16384, "decay": true, "unit": 0}, ...],
//   "files":  [{"name": "rank-00000.bin", "rank": 0, "size": 123456}, ...],
//   "states": {"master": {"dtype": "f32", "numel": <table total>, "block_bytes": 1048576,
//                         "segments": [{"file": "rank-00000.bin", "file_offset": 0,
//                                       "global_offset": 0, "numel": 8192,
//                                       "block_crc32c": [305419896, ...]}, ...]}, ...},
//   "extra": {...caller's opaque blobs: data loader, rng, job spec, metrics...}
// }
// Block k of a segment is its bytes [k*block_bytes, min((k+1)*block_bytes, numel*elem)), so a
// reader verifies exactly the blocks its range overlaps. The per-parameter fragments are the
// segments cut at parameter boundaries (FragmentsOf), not stored.
//
// Version 1 (still read): each state has "params": [{"name", "fragments": [{"file",
// "file_offset", "global_offset", "numel", "crc32c"}]}] with one CRC32C per whole fragment.
#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "worker/checkpoint/fs_util.h"
#include "worker/checkpoint/manifest.h"
#include "worker/core/bounded_input.h"
#include "worker/core/status.h"

namespace tern::ckpt {

namespace {

// Version 2: the segments of one state, checked against the files and the table; fragments
// derived from them.
absl::Status SegmentsFromJson(const nlohmann::json& js,
                              const std::map<std::string, uint32_t>& files, const Manifest& m,
                              const std::string& where, ManifestState* st) {
  st->block_bytes = js.at("block_bytes").get<uint64_t>();
  if (st->block_bytes == 0 || st->block_bytes % kAlign != 0) {
    return absl::DataLossError(absl::StrCat(where, ": state '", st->name, "' has block_bytes ",
                                            st->block_bytes, " (not a multiple of 4096)"));
  }
  for (const auto& jg : js.at("segments")) {
    const std::string fname = jg.at("file").get<std::string>();
    auto fit = files.find(fname);
    ManifestSegment g;
    g.file_offset = jg.at("file_offset").get<uint64_t>();
    g.global_offset = jg.at("global_offset").get<uint64_t>();
    g.numel = jg.at("numel").get<uint64_t>();
    g.block_crc32c = jg.at("block_crc32c").get<std::vector<uint32_t>>();
    const uint64_t bytes = g.numel * st->elem_bytes;
    if (fit == files.end() || g.numel == 0 || g.global_offset + g.numel > m.params.total() ||
        g.file_offset + bytes > m.files[fit->second].size ||
        g.block_crc32c.size() != (bytes + st->block_bytes - 1) / st->block_bytes) {
      return absl::DataLossError(absl::StrCat(where, ": bad segment of state '", st->name,
                                              "' at element ", g.global_offset, " in '", fname,
                                              "'"));
    }
    g.file = fit->second;
    for (const auto& f : FragmentsOf(g, st->elem_bytes, m.params)) st->fragments.push_back(f);
    st->segments.push_back(std::move(g));
  }
  std::sort(st->segments.begin(), st->segments.end(),
            [](const ManifestSegment& a, const ManifestSegment& b) {
              return a.global_offset < b.global_offset;
            });
  std::sort(st->fragments.begin(), st->fragments.end(),
            [](const ManifestFragment& a, const ManifestFragment& b) {
              return a.global_offset < b.global_offset;
            });
  for (size_t i = 1; i < st->segments.size(); ++i) {
    const auto& a = st->segments[i - 1];
    if (a.global_offset + a.numel > st->segments[i].global_offset) {
      return absl::DataLossError(absl::StrCat(where, ": state '", st->name,
                                              "': segments overlap at element ",
                                              st->segments[i].global_offset));
    }
  }
  return absl::OkStatus();
}

}  // namespace

nlohmann::json ManifestToJson(const Manifest& m) {
  using json = nlohmann::json;
  const auto& entries = m.params.entries();
  json params = json::array();
  for (const auto& e : entries) {
    params.push_back({{"name", e.name},
                      {"shape", e.shape},
                      {"offset", e.offset},
                      {"numel", e.numel},
                      {"decay", e.decay},
                      {"unit", e.unit}});
  }
  json files = json::array();
  for (const auto& f : m.files)
    files.push_back({{"name", f.name}, {"rank", f.rank}, {"size", f.size}});
  json states = json::object();
  for (const auto& st : m.states) {
    if (m.version >= 2) {
      json segs = json::array();
      for (const auto& g : st.segments) {
        segs.push_back({{"file", m.files[g.file].name},
                        {"file_offset", g.file_offset},
                        {"global_offset", g.global_offset},
                        {"numel", g.numel},
                        {"block_crc32c", g.block_crc32c}});
      }
      states[st.name] = {{"dtype", st.dtype},
                         {"numel", m.params.total()},
                         {"block_bytes", st.block_bytes},
                         {"segments", std::move(segs)}};
      continue;
    }
    std::vector<json> per_param(entries.size(), json::array());
    for (const auto& f : st.fragments) {
      per_param[f.param].push_back({{"file", m.files[f.file].name},
                                    {"file_offset", f.file_offset},
                                    {"global_offset", f.global_offset},
                                    {"numel", f.numel},
                                    {"crc32c", f.crc32c}});
    }
    json plist = json::array();
    for (size_t i = 0; i < entries.size(); ++i) {
      plist.push_back({{"name", entries[i].name}, {"fragments", std::move(per_param[i])}});
    }
    states[st.name] = {{"dtype", st.dtype}, {"numel", m.params.total()}, {"params", plist}};
  }
  return {{"format", "tern.checkpoint"},
          {"version", m.version},
          {"step", m.step},
          {"created_unix_ms", m.created_unix_ms},
          {"world", m.world},
          {"params", params},
          {"files", files},
          {"states", states},
          {"extra", m.extra}};
}

absl::StatusOr<Manifest> ManifestFromJson(const nlohmann::json& j, const std::string& where) {
  Manifest m;
  try {
    if (j.value("format", "") != "tern.checkpoint") {
      return absl::DataLossError(absl::StrCat(where, ": not a tern checkpoint manifest"));
    }
    m.version = j.at("version").get<int>();
    if (m.version != 1 && m.version != 2) {
      return absl::FailedPreconditionError(absl::StrCat(where, ": manifest version ", m.version,
                                                        ", this build reads versions 1 and 2"));
    }
    m.step = j.at("step").get<int64_t>();
    m.created_unix_ms = j.value("created_unix_ms", int64_t{0});
    m.world = j.value("world", nlohmann::json::object());
    m.extra = j.value("extra", nlohmann::json::object());
    std::map<std::string, uint32_t> param_idx;
    for (const auto& p : j.at("params")) {
      const std::string name = p.at("name").get<std::string>();
      const uint64_t off = m.params.Add(name, p.at("shape").get<std::vector<int64_t>>(),
                                        p.value("decay", true), p.value("unit", 0));
      if (off != p.at("offset").get<uint64_t>() ||
          m.params.entries().back().numel != p.at("numel").get<uint64_t>()) {
        return absl::DataLossError(
            absl::StrCat(where, ": param '", name, "' offset/numel disagree with its shape"));
      }
      param_idx[name] = static_cast<uint32_t>(param_idx.size());
    }
    std::map<std::string, uint32_t> file_idx;
    for (const auto& f : j.at("files")) {
      ManifestFile mf{f.at("name").get<std::string>(), f.at("rank").get<int>(),
                      f.at("size").get<uint64_t>()};
      if (mf.name.find('/') != std::string::npos || mf.name.empty() || mf.name[0] == '.') {
        return absl::DataLossError(absl::StrCat(where, ": bad file name '", mf.name, "'"));
      }
      file_idx[mf.name] = static_cast<uint32_t>(m.files.size());
      m.files.push_back(std::move(mf));
    }
    for (const auto& [sname, js] : j.at("states").items()) {
      ManifestState st;
      st.name = sname;
      st.dtype = js.at("dtype").get<std::string>();
      st.elem_bytes = DtypeBytes(st.dtype);
      if (st.elem_bytes == 0) {
        return absl::DataLossError(
            absl::StrCat(where, ": state '", sname, "' has unknown dtype ", st.dtype));
      }
      if (m.version >= 2) {
        TERN_RETURN_IF_ERROR(SegmentsFromJson(js, file_idx, m, where, &st));
        m.states.push_back(std::move(st));
        continue;
      }
      for (const auto& jp : js.at("params")) {
        const std::string pname = jp.at("name").get<std::string>();
        auto pit = param_idx.find(pname);
        if (pit == param_idx.end()) {
          return absl::DataLossError(
              absl::StrCat(where, ": state '", sname, "' names unknown param '", pname, "'"));
        }
        const ParamEntry& pe = m.params.entries()[pit->second];
        for (const auto& jf : jp.at("fragments")) {
          const std::string fname = jf.at("file").get<std::string>();
          auto fit = file_idx.find(fname);
          ManifestFragment f{0,
                             pit->second,
                             jf.at("file_offset").get<uint64_t>(),
                             jf.at("global_offset").get<uint64_t>(),
                             jf.at("numel").get<uint64_t>(),
                             jf.at("crc32c").get<uint32_t>()};
          if (fit == file_idx.end() || f.global_offset < pe.offset ||
              f.global_offset + f.numel > pe.offset + pe.numel) {
            return absl::DataLossError(absl::StrCat(where, ": bad fragment of param '", pname,
                                                    "' in state '", sname, "'"));
          }
          f.file = fit->second;
          st.fragments.push_back(f);
        }
      }
      std::sort(st.fragments.begin(), st.fragments.end(),
                [](const ManifestFragment& a, const ManifestFragment& b) {
                  return a.global_offset < b.global_offset;
                });
      m.states.push_back(std::move(st));
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat(where, ": malformed manifest: ", e.what()));
  }
  return m;
}

absl::StatusOr<Manifest> ReadManifest(const std::string& step_dir) {
  const std::string path = step_dir + "/" + kManifestName;
  auto text = ReadSmallFile(path);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) {
      return absl::NotFoundError(
          absl::StrCat(step_dir, " has no committed manifest (incomplete checkpoint)"));
    }
    return text.status();
  }
  // The manifest nests 5 deep (states / fragments / fields).
  auto j = ParseJsonBounded(*text, path, 16);
  if (!j.ok()) return absl::DataLossError(absl::StrCat(j.status().message(), " (not valid JSON)"));
  return ManifestFromJson(*j, path);
}

}  // namespace tern::ckpt
