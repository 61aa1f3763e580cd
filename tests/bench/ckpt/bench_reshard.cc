// tern-bench-reshard --dir DIR [--elements N --from 4:3 --to 4:3,3:1,8:0,2:2 --reps K]
// Saves one checkpoint (3 fp32 states of N elements each; default 3 x 360 MB = 1.08 GB) in
// the layout --from (ranks:ZeRO stage), with a table shaped like a decoder (embeddings, blocks,
// head: the ZeRO units), then loads it into each --to layout the way the trainer does: every
// rank reads exactly its owned ranges (ZeRO 1-3: its chunk of every unit; ZeRO 0: its 1/N
// share, all-gathered afterwards) through the manifest, O_DIRECT, each checksum block verified.
// Ranks read one after another (total_s: the whole read work; max_rank_s: the slowest rank).
// The first --to layout is the reference; the others report their ratio to it. Reps alternate
// the order of the layouts; medians. Prints one JSON line per layout, then a summary line.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/manifest.h"
#include "worker/engine/reshard_plan.h"

namespace tern {
namespace {

using Clock = std::chrono::steady_clock;

struct Layout {
  int ranks = 1;
  int stage = 0;
  std::string name() const { return absl::StrCat(ranks, "x", "zero", stage); }
};

Layout ParseLayout(const std::string& s) {
  std::vector<std::string> p = absl::StrSplit(s, ':');
  Layout l;
  l.ranks = std::stoi(p.at(0));
  l.stage = p.size() > 1 ? std::stoi(p[1]) : 0;
  return l;
}

// A decoder-shaped table of about `total` elements: embeddings, 24 blocks of 4 awkwardly sized
// matrices and 2 norms, a head.
ParamTable MakeTable(uint64_t total) {
  ParamTable t;
  const int64_t embed = static_cast<int64_t>(total / 10 / 4099);
  t.Add("model.embed_tokens.weight", {4099, embed}, true, 0);
  const uint64_t per_block = (total - 2 * 4099 * uint64_t(embed)) / 24;
  for (int b = 0; b < 24; ++b) {
    const std::string p = absl::StrCat("model.layers.", b, ".");
    const int64_t rows = static_cast<int64_t>(per_block / 4 / 1021);
    t.Add(p + "input_layernorm.weight", {1021}, false, b + 1);
    for (const char* m : {"q_proj", "k_proj", "v_proj", "o_proj"})
      t.Add(p + "self_attn." + m + ".weight", {rows, 1021}, true, b + 1);
    t.Add(p + "post_attention_layernorm.weight", {1021}, false, b + 1);
  }
  t.Add("lm_head.weight", {4099, embed}, true, 25);
  return t;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct LoadResult {
  double total_s = 0, max_rank_s = 0;
  uint64_t owned_bytes = 0, io_bytes = 0;
  bool ok = true;
};

LoadResult Load(const std::string& root, const ParamTable& table, const Layout& l,
                const std::vector<std::vector<float>>& source, std::vector<float>& scratch,
                bool check) {
  LoadResult r;
  const char* states[] = {"master", "exp_avg", "exp_avg_sq"};
  for (int rank = 0; rank < l.ranks; ++rank) {
    const auto t0 = Clock::now();
    auto ck = ckpt::Checkpoint::Open(root, "latest");
    if (!ck.ok()) {
      std::fprintf(stderr, "%s\n", std::string(ck.status().message()).c_str());
      r.ok = false;
      return r;
    }
    for (int s = 0; s < 3; ++s) {
      for (const auto& [b, e] : engine::OwnedRanges(table, l.ranks, l.stage, rank)) {
        absl::Status st = (*ck)->ReadState(states[s], b, e - b, scratch.data());
        if (!st.ok()) {
          std::fprintf(stderr, "%s\n", std::string(st.message()).c_str());
          r.ok = false;
          return r;
        }
        if (check && std::memcmp(scratch.data(), source[s].data() + b, (e - b) * 4) != 0) {
          r.ok = false;
        }
        r.owned_bytes += (e - b) * 4;
      }
    }
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    r.io_bytes += (*ck)->io_bytes_read();
    r.total_s += secs;
    r.max_rank_s = std::max(r.max_rank_s, secs);
  }
  return r;
}

int Main(int argc, char** argv) {
  CLI::App app("Checkpoint reshard load benchmark");
  std::string dir = "/tmp", from_s = "4:3", to_s = "4:3,3:1,8:0,2:2";
  uint64_t elements = 90ull << 20;
  int reps = 3;
  bool keep = false;
  app.add_option("--dir", dir, "Directory for the checkpoint");
  app.add_option("--elements", elements, "Elements per state (x3 states x 4 bytes on disk)");
  app.add_option("--from", from_s, "Saved layout ranks:stage");
  app.add_option("--to", to_s, "Comma-separated load layouts; the first is the reference");
  app.add_option("--reps", reps, "Repetitions (median)");
  app.add_flag("--keep", keep, "Keep the checkpoint");
  CLI11_PARSE(app, argc, argv);
  const Layout from = ParseLayout(from_s);
  std::vector<Layout> to;
  for (const auto& s : absl::StrSplit(to_s, ',')) to.push_back(ParseLayout(std::string(s)));

  const ParamTable table = MakeTable(elements);
  const std::string root = absl::StrCat(dir, "/tern-bench-reshard-", getpid());
  std::vector<std::vector<float>> source(3, std::vector<float>(table.total()));
  for (int s = 0; s < 3; ++s)
    for (uint64_t i = 0; i < table.total(); ++i) source[s][i] = float(s) + 1e-7f * float(i);
  std::vector<std::vector<ckpt::Segment>> segs(from.ranks);
  const char* states[] = {"master", "exp_avg", "exp_avg_sq"};
  for (int r = 0; r < from.ranks; ++r)
    for (int s = 0; s < 3; ++s)
      for (const auto& [b, e] : engine::OwnedRanges(table, from.ranks, from.stage, r))
        segs[r].push_back({states[s], b, e - b, "f32", source[s].data() + b});
  const auto t0 = Clock::now();
  absl::Status saved = ckpt::SaveCheckpointLocal(root, 1, segs, table);
  const double save_s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!saved.ok()) {
    std::fprintf(stderr, "save: %s\n", std::string(saved.message()).c_str());
    return 1;
  }
  uint64_t bytes = 0;
  for (const auto& e : std::filesystem::directory_iterator(root + "/step-000001"))
    bytes += e.file_size();
  std::vector<float> scratch(table.total());  // the largest range a rank can own
  std::vector<std::vector<double>> totals(to.size()), maxes(to.size());
  std::vector<LoadResult> last(to.size());
  bool ok = true;
  for (int rep = 0; rep < reps; ++rep) {
    for (size_t k = 0; k < to.size(); ++k) {
      const size_t i = rep % 2 == 0 ? k : to.size() - 1 - k;  // alternate the order
      last[i] = Load(root, table, to[i], source, scratch, rep == 0);
      ok = ok && last[i].ok;
      totals[i].push_back(last[i].total_s);
      maxes[i].push_back(last[i].max_rank_s);
    }
  }
  const double ref = Median(totals[0]);
  double worst_ratio = 0;
  for (size_t i = 0; i < to.size(); ++i) {
    const double t = Median(totals[i]);
    worst_ratio = std::max(worst_ratio, t / ref);
    nlohmann::json j = {{"bench", "reshard_load"},
                        {"from", from.name()},
                        {"to", to[i].name()},
                        {"checkpoint_bytes", bytes},
                        {"owned_bytes", last[i].owned_bytes},
                        {"io_bytes", last[i].io_bytes},
                        {"total_s", t},
                        {"max_rank_s", Median(maxes[i])},
                        {"gibps", double(last[i].owned_bytes) / t / double(1ull << 30)},
                        {"ratio_to_reference", t / ref}};
    std::printf("%s\n", j.dump().c_str());
  }
  std::printf("%s\n", nlohmann::json{{"bench", "reshard_summary"},
                                     {"checkpoint_bytes", bytes},
                                     {"save_s", save_s},
                                     {"reference", to[0].name()},
                                     {"worst_ratio", worst_ratio},
                                     {"within_1_2x", worst_ratio <= 1.2},
                                     {"verified", ok}}
                          .dump()
                          .c_str());
  if (!keep) std::filesystem::remove_all(root);
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace tern

int main(int argc, char** argv) { return tern::Main(argc, argv); }
