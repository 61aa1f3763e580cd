// Helpers for the checkpoint tests: a temporary directory, a small parameter table, and
// deterministic state contents.
#pragma once

#include <sys/vfs.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/checkpoint/shard_writer.h"
#include "worker/core/param_table.h"

namespace tern::ckpt::testing {

// A fresh directory under `parent`, removed (with everything in it) on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& parent = "/tmp") {
    std::string tmpl = parent + "/tern_ckpt_test_XXXXXX";
    char* p = ::mkdtemp(tmpl.data());
    EXPECT_NE(p, nullptr) << "mkdtemp in " << parent;
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline bool IsTmpfs(const std::string& path) {
  struct statfs s;
  return ::statfs(path.c_str(), &s) == 0 && s.f_type == 0x01021994;  // TMPFS_MAGIC
}

// Parameters with awkward sizes (none a multiple of 1024 elements).
inline ParamTable SmallTable() {
  ParamTable t;
  t.Add("model.embed_tokens.weight", {1000, 37}, true, 0);
  t.Add("model.layers.0.self_attn.q_proj.weight", {123, 45}, true, 1);
  t.Add("model.layers.0.self_attn.q_proj.bias", {45}, false, 1);
  t.Add("model.layers.0.input_layernorm.weight", {7}, false, 1);
  t.Add("model.layers.1.mlp.up_proj.weight", {211, 33}, true, 2);
  t.Add("model.norm.weight", {1}, false, 3);
  t.Add("lm_head.weight", {333, 17}, true, 3);
  return t;
}

inline const std::vector<std::string>& StateNames() {
  static const std::vector<std::string> names = {"master", "exp_avg", "exp_avg_sq"};
  return names;
}

// Full flat buffer of state `s`: element i = s * 1e6 + i (exact in f32 for these sizes).
inline std::vector<float> StateValues(int s, uint64_t total) {
  std::vector<float> v(total);
  for (uint64_t i = 0; i < total; ++i) v[i] = static_cast<float>(s * 1000000 + i);
  return v;
}

// Segments of every state for each rank's range [bounds[r], bounds[r+1]); rank 1 splits its
// range into two segments per state.
inline std::vector<std::vector<Segment>> RankSegments(const std::vector<std::vector<float>>& st,
                                                      const std::vector<uint64_t>& bounds) {
  std::vector<std::vector<Segment>> out(bounds.size() - 1);
  for (size_t r = 0; r + 1 < bounds.size(); ++r) {
    for (size_t s = 0; s < st.size(); ++s) {
      const uint64_t lo = bounds[r], hi = bounds[r + 1];
      if (r == 1) {
        const uint64_t mid = lo + (hi - lo) / 3;
        out[r].push_back({StateNames()[s], lo, mid - lo, "f32", st[s].data() + lo});
        out[r].push_back({StateNames()[s], mid, hi - mid, "f32", st[s].data() + mid});
      } else {
        out[r].push_back({StateNames()[s], lo, hi - lo, "f32", st[s].data() + lo});
      }
    }
  }
  return out;
}

}  // namespace tern::ckpt::testing
