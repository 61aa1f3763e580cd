// Manifest v2 exact reads: a range fetches and verifies only the checksum blocks it overlaps
// (the I/O engine's counter holds it to the range plus one block at each end), a corrupt block
// fails only the reads that touch it, and version-1 manifests still load and upgrade.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "gtest/gtest.h"
#include "tests/worker/checkpoint/test_util.h"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/crc32c.h"
#include "worker/checkpoint/fs_util.h"
#include "worker/checkpoint/manifest.h"

namespace tern::ckpt {
namespace {

using testing::RankSegments;
using testing::SmallTable;
using testing::StateNames;
using testing::StateValues;
using testing::TempDir;

constexpr uint64_t kBlock = 4096;

bool Contains(const absl::Status& st, const std::string& s) {
  return std::string(st.message()).find(s) != std::string::npos;
}

struct Saved {
  ParamTable table = SmallTable();
  std::vector<std::vector<float>> states;
};

Saved Save(const std::string& root, int64_t step) {
  Saved s;
  for (int i = 0; i < 3; ++i) s.states.push_back(StateValues(i, s.table.total()));
  WriterOptions wo;
  wo.checksum_block = kBlock;
  const std::vector<uint64_t> bounds = {0, 10007, 31111, s.table.total()};
  EXPECT_TRUE(
      SaveCheckpointLocal(root, step, RankSegments(s.states, bounds), s.table, {}, wo).ok());
  return s;
}

void FlipByte(const std::string& path, uint64_t at) {
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  uint8_t b;
  ASSERT_EQ(::pread(fd, &b, 1, static_cast<off_t>(at)), 1);
  b ^= 0x5A;
  ASSERT_EQ(::pwrite(fd, &b, 1, static_cast<off_t>(at)), 1);
  ::close(fd);
}

TEST(CkptExactReadTest, RandomRangesReadAtMostOneBlockBeyondEachEnd) {
  TempDir dir;
  Saved s = Save(dir.path(), 1);
  std::mt19937_64 rng(7);
  for (int k = 0; k < 200; ++k) {
    auto c = Checkpoint::Open(dir.path(), "step-000001");  // fresh counters
    ASSERT_TRUE(c.ok()) << c.status();
    const int si = static_cast<int>(rng() % 3);
    const uint64_t total = s.table.total();
    const uint64_t a = rng() % total;
    const uint64_t n = 1 + rng() % (k % 2 ? 64 : total - a);
    const uint64_t numel = std::min(n, total - a);
    auto plan = (*c)->PlanRead(StateNames()[si], a, numel);
    ASSERT_TRUE(plan.ok()) << plan.status();
    std::vector<float> got(numel);
    ASSERT_TRUE((*c)->ReadState(StateNames()[si], a, numel, got.data()).ok());
    ASSERT_EQ(std::memcmp(got.data(), s.states[si].data() + a, numel * 4), 0);
    uint64_t planned = 0;
    for (size_t i = 0; i < plan->size(); ++i) {
      const ReadExtent& x = (*plan)[i];
      planned += x.bytes;
      // Only the first and last extent of a range may exceed what it wants, by < one block.
      if (i > 0 && i + 1 < plan->size()) {
        EXPECT_EQ(x.bytes, x.wanted);
      }
      EXPECT_LT(x.bytes, x.wanted + 2 * kBlock);
    }
    EXPECT_EQ((*c)->bytes_read(), planned);
    // The engine's counter: the owned bytes, one block at each end, and the O_DIRECT rounding
    // of each segment end read (< 4 KiB per extent).
    EXPECT_LE((*c)->io_bytes_read(), numel * 4 + 2 * kBlock + 4096 * plan->size())
        << a << "+" << numel;
  }
}

TEST(CkptExactReadTest, CorruptBlockFailsOnlyTheReadsThatTouchIt) {
  TempDir dir;
  Saved s = Save(dir.path(), 1);
  auto m = ReadManifest(dir.path() + "/step-000001");
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->version, 2);
  // rank 0's master segment [0, 10007): corrupt block 5 (elements [5120, 6144)).
  const ManifestState* master = nullptr;
  for (const auto& st : m->states)
    if (st.name == "master") master = &st;
  ASSERT_NE(master, nullptr);
  const ManifestSegment& g = master->segments[0];
  ASSERT_EQ(g.global_offset, 0u);
  ASSERT_EQ(g.block_crc32c.size(), (10007u * 4 + kBlock - 1) / kBlock);
  FlipByte(dir.path() + "/step-000001/" + m->files[g.file].name, g.file_offset + 5 * kBlock + 17);
  auto c = Checkpoint::Open(dir.path(), "step-000001");
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<float> v(1024);
  EXPECT_TRUE((*c)->ReadState("master", 4096, 1024, v.data()).ok());  // block 4
  EXPECT_TRUE((*c)->ReadState("master", 6144, 1024, v.data()).ok());  // block 6
  absl::Status bad = (*c)->ReadState("master", 6000, 10, v.data());
  EXPECT_EQ(bad.code(), absl::StatusCode::kDataLoss) << bad;
  EXPECT_TRUE(Contains(bad, "block 5")) << bad;
  EXPECT_TRUE(Contains(bad, "rank-00000.bin")) << bad;
  EXPECT_TRUE(Contains(bad, "model.embed_tokens.weight")) << bad;
  EXPECT_EQ((*c)->Verify().code(), absl::StatusCode::kDataLoss);
}

// Rewrites a version-2 manifest in the version-1 format (one CRC32C per fragment).
void Downgrade(const std::string& step_dir, const Saved& s) {
  auto m = ReadManifest(step_dir);
  ASSERT_TRUE(m.ok()) << m.status();
  m->version = 1;
  for (auto& st : m->states) {
    const size_t i =
        std::find(StateNames().begin(), StateNames().end(), st.name) - StateNames().begin();
    ASSERT_LT(i, 3u) << st.name;
    for (auto& f : st.fragments) {
      f.crc32c = Crc32c(s.states[i].data() + f.global_offset, f.numel * 4);
    }
    st.segments.clear();
    st.block_bytes = 0;
  }
  ASSERT_TRUE(WriteFileAtomic(step_dir + "/manifest.json", ManifestToJson(*m).dump(1)).ok());
}

TEST(CkptExactReadTest, VersionOneManifestLoadsAndUpgradesInPlace) {
  TempDir dir;
  Saved s = Save(dir.path(), 3);
  const std::string step_dir = dir.path() + "/step-000003";
  Downgrade(step_dir, s);
  auto text = ReadSmallFile(step_dir + "/manifest.json");
  ASSERT_TRUE(text.ok());
  EXPECT_NE(text->find("\"version\": 1"), std::string::npos);
  auto check_all = [&](int version) {
    auto c = Checkpoint::Open(dir.path(), "latest");
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ((*c)->manifest().version, version);
    for (int i = 0; i < 3; ++i) {
      std::vector<float> all(s.table.total());
      ASSERT_TRUE((*c)->ReadState(StateNames()[i], 0, all.size(), all.data()).ok());
      EXPECT_EQ(all, s.states[i]);
    }
    EXPECT_TRUE((*c)->Verify().ok());
  };
  check_all(1);
  auto up = UpgradeManifest(step_dir, kBlock);
  ASSERT_TRUE(up.ok()) << up.status();
  EXPECT_TRUE(*up);
  check_all(2);
  auto again = UpgradeManifest(step_dir, kBlock);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
}

TEST(CkptExactReadTest, UpgradeRefusesACorruptVersionOneCheckpointAndWritesNothing) {
  TempDir dir;
  Saved s = Save(dir.path(), 3);
  const std::string step_dir = dir.path() + "/step-000003";
  Downgrade(step_dir, s);
  auto before = ReadSmallFile(step_dir + "/manifest.json");
  FlipByte(step_dir + "/rank-00002.bin", 100);
  auto up = UpgradeManifest(step_dir, kBlock);
  EXPECT_EQ(up.status().code(), absl::StatusCode::kDataLoss) << up.status();
  EXPECT_TRUE(Contains(up.status(), "rank-00002.bin")) << up.status();
  EXPECT_EQ(*ReadSmallFile(step_dir + "/manifest.json"), *before);
}

}  // namespace
}  // namespace tern::ckpt
