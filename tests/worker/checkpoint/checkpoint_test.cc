// Checkpoint layout, manifest and loader: round trip across simulated ranks with uneven
// partitions, arbitrary-range reads, corruption, missing files, listing and retention.
#include "worker/checkpoint/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "gtest/gtest.h"
#include "tests/worker/checkpoint/test_util.h"
#include "worker/checkpoint/fs_util.h"
#include "worker/checkpoint/manifest.h"

namespace tern::ckpt {
namespace {

using testing::RankSegments;
using testing::SmallTable;
using testing::StateNames;
using testing::StateValues;
using testing::TempDir;

bool Contains(const absl::Status& st, const std::string& s) {
  return std::string(st.message()).find(s) != std::string::npos;
}

struct Saved {
  ParamTable table = SmallTable();
  std::vector<std::vector<float>> states;
  std::vector<uint64_t> bounds;
};

Saved SaveThreeRanks(const std::string& root, int64_t step, float bump = 0,
                     const WriterOptions& wo = {}, int keep_last = 0) {
  Saved s;
  for (int i = 0; i < 3; ++i) {
    s.states.push_back(StateValues(i, s.table.total()));
    for (auto& v : s.states.back()) v += bump;
  }
  s.bounds = {0, 10007, 31111, s.table.total()};  // uneven, cutting through parameters
  CommitOptions co;
  co.world = {{"dp", 3}, {"zero_stage", 3}};
  co.extra = {{"data_loader", {{"epoch", 1}, {"sample", 4242}}}, {"rng", {{"seed", 7}}}};
  co.keep_last = keep_last;
  absl::Status st =
      SaveCheckpointLocal(root, step, RankSegments(s.states, s.bounds), s.table, co, wo);
  EXPECT_TRUE(st.ok()) << st;
  return s;
}

void ExpectRoundTrip(const std::string& root, const Saved& s, int64_t step) {
  auto c = Checkpoint::Open(root, "latest");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->step(), step);
  EXPECT_EQ((*c)->world()["dp"], 3);
  EXPECT_EQ((*c)->extra()["data_loader"]["sample"], 4242);
  EXPECT_EQ((*c)->params().total(), s.table.total());
  EXPECT_EQ((*c)->params().entries()[4].name, "model.layers.1.mlp.up_proj.weight");
  EXPECT_EQ((*c)->manifest().files.size(), 3u);
  std::mt19937 rng(1);
  for (int s_idx = 0; s_idx < 3; ++s_idx) {
    const auto& want = s.states[s_idx];
    for (int k = 0; k < 40; ++k) {
      uint64_t a = rng() % want.size();
      uint64_t n = 1 + rng() % (k < 20 ? 64 : want.size() - a);
      n = std::min<uint64_t>(n, want.size() - a);
      std::vector<float> got(n, -1);
      ASSERT_TRUE((*c)->ReadState(StateNames()[s_idx], a, n, got.data()).ok());
      ASSERT_EQ(std::memcmp(got.data(), want.data() + a, n * 4), 0) << a << "+" << n;
    }
    std::vector<float> all(want.size());
    ASSERT_TRUE((*c)->ReadState(StateNames()[s_idx], 0, all.size(), all.data()).ok());
    EXPECT_EQ(all, want);
  }
}

TEST(CkptCheckpointTest, RoundTripThreeUnevenRanks) {
  TempDir dir;
  Saved s = SaveThreeRanks(dir.path(), 120);
  ExpectRoundTrip(dir.path(), s, 120);
  // Fragments are segment ∩ parameter: the embedding (37000 elements) is cut at 10007 (rank 1),
  // 17041 (rank 1's second segment) and 31111 (rank 2), so 'master' has 4 fragments for it.
  auto m = ReadManifest(dir.path() + "/step-000120");
  ASSERT_TRUE(m.ok()) << m.status();
  int embed_frags = 0;
  for (const auto& f : m->states[0].fragments) embed_frags += f.param == 0;
  EXPECT_EQ(embed_frags, 4);
  // Segment starts in each rank file are 4 KiB aligned.
  for (const auto& st : m->states) {
    for (const auto& f : st.fragments) {
      const auto& p = m->params.entries()[f.param];
      if (f.global_offset == 0 || f.global_offset == 10007 || f.global_offset == 31111) {
        EXPECT_EQ(f.file_offset % 4096, 0u) << p.name;
      }
    }
  }
  auto text = ReadSmallFile(dir.path() + "/latest");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "step-000120\n");
  EXPECT_TRUE(VerifyCheckpoint(dir.path() + "/step-000120").ok());
}

TEST(CkptCheckpointTest, ReadsFetchOnlyTheOverlappingChecksumBlocks) {
  TempDir dir;
  WriterOptions wo;
  wo.checksum_block = 4096;
  Saved s = SaveThreeRanks(dir.path(), 5, 0, wo);
  auto c = Checkpoint::Open(dir.path(), "step-000005");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->manifest().version, 2);
  float x;
  // One element fetches (and verifies) the one 4 KiB block around it, not the fragment.
  ASSERT_TRUE((*c)->ReadState("master", 100, 1, &x).ok());
  EXPECT_EQ(x, 100.0f);
  EXPECT_EQ((*c)->bytes_read(), 4096u);
  EXPECT_EQ((*c)->io_bytes_read(), 4096u);
  // Elements [1000, 3000) span blocks 0..2 of rank 0's segment.
  std::vector<float> v(2000);
  ASSERT_TRUE((*c)->ReadState("master", 1000, 2000, v.data()).ok());
  EXPECT_EQ(v[1999], 2999.0f);
  EXPECT_EQ((*c)->bytes_read(), 4096u + 3 * 4096u);
  auto plan = (*c)->PlanRead("master", 1000, 2000);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->size(), 1u);
  EXPECT_EQ((*plan)[0].offset, 0u);
  EXPECT_EQ((*plan)[0].bytes, 3 * 4096u);
  EXPECT_EQ((*plan)[0].wanted, 8000u);
}

TEST(CkptCheckpointTest, FallbackPathsRoundTrip) {
  ASSERT_TRUE(testing::IsTmpfs("/dev/shm"));
  TempDir shm("/dev/shm");
  SetIoRefusalsForTesting(false, true);  // tmpfs before Linux 6.6: no O_DIRECT
  Saved s = SaveThreeRanks(shm.path(), 7);
  ExpectRoundTrip(shm.path(), s, 7);
  SetIoRefusalsForTesting(false, false);
  TempDir shm2("/dev/shm");  // and whatever this kernel's tmpfs does
  Saved s1 = SaveThreeRanks(shm2.path(), 6);
  ExpectRoundTrip(shm2.path(), s1, 6);
  TempDir disk;
  WriterOptions wo;
  wo.io.use_uring = false;  // as on a kernel that refuses io_uring
  Saved s2 = SaveThreeRanks(disk.path(), 8, 0, wo);
  ExpectRoundTrip(disk.path(), s2, 8);
}

TEST(CkptCheckpointTest, LargeCheckpointTwoRanks) {
  TempDir dir;
  ParamTable t;
  t.Add("a", {3000, 1000}, true, 0);
  t.Add("b", {1000, 9001}, true, 1);  // 12,001,000 floats = 48 MiB
  std::vector<float> v(t.total());
  for (uint64_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i % 1000003) * 0.5f;
  const uint64_t half = t.total() / 2 + 123;
  std::vector<std::vector<Segment>> segs = {
      {{"weights", 0, half, "f32", v.data()}},
      {{"weights", half, t.total() - half, "f32", v.data() + half}}};
  ASSERT_TRUE(SaveCheckpointLocal(dir.path(), 1, segs, t).ok());
  auto c = Checkpoint::Open(dir.path());
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<float> back(t.total());
  ASSERT_TRUE((*c)->ReadState("weights", 0, t.total(), back.data()).ok());
  EXPECT_EQ(std::memcmp(back.data(), v.data(), v.size() * 4), 0);
}

TEST(CkptCheckpointTest, FlippedByteIsDataLossNamingFileAndFragment) {
  TempDir dir;
  SaveThreeRanks(dir.path(), 100);
  Saved s = SaveThreeRanks(dir.path(), 200, 1.0f);
  auto m = ReadManifest(dir.path() + "/step-000200");
  ASSERT_TRUE(m.ok());
  // Corrupt one byte in the middle of an exp_avg fragment in rank-00001.bin.
  const ManifestState* ea = nullptr;
  for (const auto& st : m->states)
    if (st.name == "exp_avg") ea = &st;
  ASSERT_NE(ea, nullptr);
  const ManifestFragment* target = nullptr;
  for (const auto& f : ea->fragments)
    if (m->files[f.file].name == "rank-00001.bin" && f.numel > 100) target = &f;
  ASSERT_NE(target, nullptr);
  const std::string param = m->params.entries()[target->param].name;
  const std::string path = dir.path() + "/step-000200/rank-00001.bin";
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  uint8_t b;
  const off_t at = static_cast<off_t>(target->file_offset + 4 * (target->numel / 2) + 1);
  ASSERT_EQ(::pread(fd, &b, 1, at), 1);
  b ^= 0x5A;
  ASSERT_EQ(::pwrite(fd, &b, 1, at), 1);
  ::close(fd);

  absl::Status v = VerifyCheckpoint(dir.path() + "/step-000200");
  EXPECT_EQ(v.code(), absl::StatusCode::kDataLoss) << v;
  EXPECT_TRUE(Contains(v, "rank-00001.bin")) << v;
  EXPECT_TRUE(Contains(v, "'exp_avg'")) << v;
  EXPECT_TRUE(Contains(v, param)) << v;
  EXPECT_TRUE(Contains(v, "--> hint: step-000100 is complete")) << v;

  auto c = Checkpoint::Open(dir.path());  // sizes match, so it opens
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<float> one(1);
  absl::Status r = (*c)->ReadState("exp_avg", target->global_offset + 3, 1, one.data());
  EXPECT_EQ(r.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(Contains(r, "rank-00001.bin")) << r;
  // Other fragments and states still read fine.
  ASSERT_TRUE((*c)->ReadState("master", target->global_offset, 1, one.data()).ok());
  EXPECT_EQ(one[0], s.states[0][target->global_offset]);
  // The previous checkpoint is intact.
  EXPECT_TRUE(VerifyCheckpoint(dir.path() + "/step-000100").ok());
}

TEST(CkptCheckpointTest, MissingOrTruncatedFile) {
  TempDir dir;
  SaveThreeRanks(dir.path(), 100);
  SaveThreeRanks(dir.path(), 200);
  {
    auto c = Checkpoint::Open(dir.path());
    ASSERT_TRUE(c.ok());
    std::filesystem::remove(dir.path() + "/step-000200/rank-00002.bin");
    std::vector<float> x(5);
    absl::Status r = (*c)->ReadState("exp_avg_sq", SmallTable().total() - 5, 5, x.data());
    EXPECT_EQ(r.code(), absl::StatusCode::kNotFound) << r;
    EXPECT_TRUE(Contains(r, "rank-00002.bin")) << r;
    EXPECT_TRUE(Contains(r, "lm_head.weight")) << r;
  }
  auto c = Checkpoint::Open(dir.path(), "latest");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(c.status(), "rank-00002.bin")) << c.status();
  EXPECT_TRUE(Contains(c.status(), "--> hint: step-000100 is complete")) << c.status();

  ASSERT_EQ(::truncate((dir.path() + "/step-000100/rank-00000.bin").c_str(), 1000), 0);
  auto c2 = Checkpoint::Open(dir.path(), "step-000100");
  EXPECT_EQ(c2.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(Contains(c2.status(), "rank-00000.bin")) << c2.status();
  auto list = ListCheckpoints(dir.path());
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_FALSE((*list)[0].complete);
  EXPECT_FALSE((*list)[1].complete);
}

TEST(CkptCheckpointTest, RejectsBadShardsAndUnknownState) {
  TempDir dir;
  ParamTable t = SmallTable();
  auto v = StateValues(0, t.total());
  // A gap: nobody saved [500, 600).
  std::vector<std::vector<Segment>> gap = {
      {{"master", 0, 500, "f32", v.data()}},
      {{"master", 600, t.total() - 600, "f32", v.data() + 600}}};
  absl::Status st = SaveCheckpointLocal(dir.path(), 1, gap, t);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(st, "model.embed_tokens.weight")) << st;
  // Overlap between ranks.
  std::vector<std::vector<Segment>> overlap = {
      {{"master", 0, 700, "f32", v.data()}},
      {{"master", 600, t.total() - 600, "f32", v.data() + 600}}};
  EXPECT_EQ(SaveCheckpointLocal(dir.path(), 2, overlap, t).code(),
            absl::StatusCode::kInvalidArgument);
  // Past the table.
  std::vector<std::vector<Segment>> past = {{{"master", 0, t.total() + 1, "f32", v.data()}}};
  EXPECT_EQ(SaveCheckpointLocal(dir.path(), 3, past, t).code(), absl::StatusCode::kInvalidArgument);
  // None of these committed anything.
  EXPECT_EQ(Checkpoint::Open(dir.path()).status().code(), absl::StatusCode::kNotFound);
  // Shard results survive a JSON round trip (what the caller all-gathers).
  auto res = WriteRankShard(dir.path(), 9, 0, {{"master", 0, t.total(), "f32", v.data()}}, t);
  ASSERT_TRUE(res.ok()) << res.status();
  auto again = RankShardResult::FromJson(nlohmann::json::parse(res->ToJson().dump()));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->ToJson(), res->ToJson());
  ASSERT_TRUE(CommitManifest(dir.path(), 9, {*again}, t).ok());
  auto c = Checkpoint::Open(dir.path());
  ASSERT_TRUE(c.ok()) << c.status();
  float x;
  absl::Status unknown = (*c)->ReadState("exp_avg", 0, 1, &x);
  EXPECT_EQ(unknown.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(unknown, "master")) << unknown;
  EXPECT_EQ((*c)->ReadState("master", t.total() - 1, 2, &x).code(), absl::StatusCode::kOutOfRange);
  // A committed step is never overwritten.
  auto again_write =
      WriteRankShard(dir.path(), 9, 0, {{"master", 0, t.total(), "f32", v.data()}}, t);
  EXPECT_EQ(again_write.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(CkptCheckpointTest, KeepLastRetentionAndListing) {
  TempDir dir;
  // A stale incomplete directory (older) and a newer one "being written".
  ASSERT_TRUE(MakeDirs(dir.path() + "/step-000002").ok());
  ASSERT_TRUE(MakeDirs(dir.path() + "/step-000009").ok());
  for (int64_t step : {1, 3, 4, 5}) SaveThreeRanks(dir.path(), step, 0, {}, /*keep_last=*/2);
  auto list = ListCheckpoints(dir.path());
  ASSERT_TRUE(list.ok());
  std::vector<std::string> names;
  for (const auto& s : *list) names.push_back(s.name + (s.complete ? "" : "?"));
  EXPECT_EQ(names, (std::vector<std::string>{"step-000004", "step-000005", "step-000009?"}));
  EXPECT_EQ((*list)[0].files, 4);  // 3 rank files + manifest
  EXPECT_GT((*list)[0].bytes, SmallTable().total() * 12);
  EXPECT_TRUE(Contains(absl::UnknownError((*list)[2].problem), "no committed manifest"));
  auto c = Checkpoint::Open(dir.path(), "step-000009");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(c.status(), "--> hint: step-000005 is complete")) << c.status();
}

}  // namespace
}  // namespace tern::ckpt

namespace tern::ckpt {
namespace {

// A round claims the root; a stale round can neither claim it back nor commit into it.
TEST(CkptRoundFenceTest, StaleRoundCannotCommit) {
  testing::TempDir dir;
  ParamTable t;
  t.Add("w", {4, 8}, true, 0);
  std::vector<float> v(t.total(), 1.0f);
  const std::vector<std::vector<Segment>> segs = {{{"weights", 0, t.total(), "f32", v.data()}}};
  ASSERT_TRUE(ClaimRound(dir.path(), 3).ok());
  CommitOptions co;
  co.round = 3;
  ASSERT_TRUE(SaveCheckpointLocal(dir.path(), 1, segs, t, co).ok());
  EXPECT_TRUE(ClaimRound(dir.path(), 3).ok());  // the same round again (a restart of it)
  ASSERT_TRUE(ClaimRound(dir.path(), 4).ok());
  // Round 3 finishing a write after round 4 started: refused, nothing committed.
  absl::Status late = SaveCheckpointLocal(dir.path(), 2, segs, t, co);
  EXPECT_EQ(late.code(), absl::StatusCode::kFailedPrecondition) << late;
  EXPECT_NE(std::string(late.message()).find("round 4 now holds"), std::string::npos) << late;
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/step-000002/manifest.json"));
  EXPECT_EQ(*ReadSmallFile(dir.path() + "/latest"), "step-000001\n");
  absl::Status stale = ClaimRound(dir.path(), 3);
  EXPECT_EQ(stale.code(), absl::StatusCode::kFailedPrecondition) << stale;
  EXPECT_NE(std::string(stale.message()).find("belongs to round 4"), std::string::npos) << stale;
  // Round 4 commits; without a round (tern train) nothing is fenced.
  co.round = 4;
  EXPECT_TRUE(SaveCheckpointLocal(dir.path(), 2, segs, t, co).ok());
  EXPECT_TRUE(SaveCheckpointLocal(dir.path(), 3, segs, t).ok());
}

}  // namespace
}  // namespace tern::ckpt
