// The FastPersist engine: CRC32C, FileWriter layout/tail/padding, every I/O path, ReadAt.
#include "worker/checkpoint/io_engine.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/worker/checkpoint/test_util.h"
#include "worker/checkpoint/crc32c.h"

namespace tern::ckpt {
namespace {

using testing::TempDir;

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST(CkptCrc32cTest, KnownVectorsAndPortableAgree) {
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(Crc32cExtendPortable(0, "123456789", 9), 0xE3069283u);
  std::vector<uint8_t> zeros(32, 0);
  EXPECT_EQ(Crc32c(zeros.data(), 32), 0x8A9136AAu);  // RFC 3720 B.4
  auto data = RandomBytes(100003, 7);
  for (size_t off : {0, 1, 3, 7}) {
    for (size_t n : {0, 1, 5, 31, 32, 33, 4096, 99991}) {
      EXPECT_EQ(Crc32c(data.data() + off, n), Crc32cExtendPortable(0, data.data() + off, n))
          << off << " " << n;
    }
  }
  // Extend composes.
  uint32_t a = Crc32c(data.data(), 5000);
  EXPECT_EQ(Crc32cExtend(a, data.data() + 5000, 95003), Crc32c(data.data(), 100003));
}

struct PathCase {
  bool use_uring;
  bool use_direct;
  bool zero_copy;
  const char* expect_path;
};

class CkptWriterPathTest : public ::testing::TestWithParam<PathCase> {};

// Segments of awkward sizes through small blocks and a shallow queue, from aligned and
// unaligned memory; checks offsets, padding, final size, piece CRCs and ReadAt.
TEST_P(CkptWriterPathTest, SegmentsRoundTrip) {
  const PathCase pc = GetParam();
  TempDir dir;
  WriterOptions wo;
  wo.io.block_size = 64 * 1024;
  wo.io.queue_depth = 3;
  wo.io.use_uring = pc.use_uring;
  wo.io.use_direct = pc.use_direct;
  wo.zero_copy = pc.zero_copy;
  const std::string path = dir.path() + "/f.bin";
  auto w = FileWriter::Open(path, wo);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_STREQ(IoPathName((*w)->io_path()), pc.expect_path);

  const std::vector<size_t> sizes = {1, 4095, 4097, 300000, 65536 * 3, 12345, 7};
  auto data = RandomBytes(4096 + 300000 * 3, 11);
  // An aligned source buffer (zero-copy candidate) and unaligned starts.
  auto* aligned = static_cast<uint8_t*>(std::aligned_alloc(kAlign, 4096 * 128));
  std::memcpy(aligned, data.data(), 4096 * 128);
  std::vector<uint64_t> offsets;
  std::vector<const uint8_t*> srcs;
  uint64_t expect_off = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const uint8_t* src = (i % 2 == 0 && sizes[i] <= 4096 * 128) ? aligned : data.data() + 3 + i;
    std::vector<uint64_t> pieces;
    if (sizes[i] > 10) pieces = {sizes[i] / 3, sizes[i] - sizes[i] / 3 - 5, 5};
    auto r = (*w)->Append(src, sizes[i], pieces);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->file_offset, AlignUp(expect_off));
    EXPECT_EQ(r->file_offset % kAlign, 0u);
    ASSERT_EQ(r->piece_crc.size(), pieces.empty() ? 1u : 3u);
    if (!pieces.empty()) {
      EXPECT_EQ(r->piece_crc[0], Crc32c(src, pieces[0]));
      EXPECT_EQ(r->piece_crc[1], Crc32c(src + pieces[0], pieces[1]));
      EXPECT_EQ(r->piece_crc[2], Crc32c(src + pieces[0] + pieces[1], 5));
    } else {
      EXPECT_EQ(r->piece_crc[0], Crc32c(src, sizes[i]));
    }
    offsets.push_back(r->file_offset);
    srcs.push_back(src);
    expect_off = r->file_offset + sizes[i];
  }
  auto size = (*w)->Finish();
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(*size, expect_off);
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), expect_off);

  IoOptions ro;
  ro.block_size = 16 * 1024;
  ro.queue_depth = 2;
  ro.use_uring = pc.use_uring;
  ro.use_direct = pc.use_direct;
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::vector<uint8_t> back(sizes[i]);
    ASSERT_TRUE(ReadAt(path, offsets[i], sizes[i], back.data(), ro).ok());
    EXPECT_EQ(std::memcmp(back.data(), srcs[i], sizes[i]), 0) << "segment " << i;
  }
  // Padding between segment 0 (1 byte) and segment 1 reads as zeros.
  std::vector<uint8_t> pad(4095, 0xFF);
  ASSERT_TRUE(ReadAt(path, 1, 4095, pad.data(), ro).ok());
  EXPECT_EQ(std::count(pad.begin(), pad.end(), 0), 4095);
  // Past the end is OUT_OF_RANGE naming the file.
  std::vector<uint8_t> tmp(16);
  auto bad = ReadAt(path, expect_off - 8, 16, tmp.data(), ro);
  EXPECT_EQ(bad.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(std::string(bad.message()).find("f.bin"), std::string::npos);
  std::free(aligned);
}

INSTANTIATE_TEST_SUITE_P(Paths, CkptWriterPathTest,
                         ::testing::Values(PathCase{true, true, true, "io_uring+O_DIRECT"},
                                           PathCase{true, true, false, "io_uring+O_DIRECT"},
                                           PathCase{false, true, true, "pwrite+O_DIRECT"},
                                           PathCase{true, false, true, "pwrite"}));

// Writes a file in /dev/shm (tmpfs) and reads it back; returns the writer's I/O path.
IoPath TmpfsRoundTrip() {
  TempDir dir("/dev/shm");
  auto w = FileWriter::Open(dir.path() + "/t.bin", {});
  EXPECT_TRUE(w.ok()) << w.status();
  if (!w.ok()) return IoPath::kUringDirect;
  auto data = RandomBytes(3 * 1048576 + 17, 5);
  EXPECT_TRUE((*w)->Append(data.data(), 100).ok());
  auto r = (*w)->Append(data.data() + 100, data.size() - 100);
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r->file_offset, 4096u);
  auto size = (*w)->Finish();
  EXPECT_TRUE(size.ok());
  EXPECT_EQ(*size, 4096 + data.size() - 100);
  std::vector<uint8_t> back(data.size() - 100);
  auto reader = FileReader::Open(dir.path() + "/t.bin");
  EXPECT_TRUE(reader.ok());
  EXPECT_EQ((*reader)->io_path(), (*w)->io_path());
  EXPECT_TRUE((*reader)->ReadAt(4096, back.size(), back.data()).ok());
  EXPECT_EQ(std::memcmp(back.data(), data.data() + 100, back.size()), 0);
  return (*w)->io_path();
}

// tmpfs refuses O_DIRECT before Linux 6.6 and accepts it after; either way the file must
// round-trip. The refusals (tmpfs on an old kernel, no io_uring) are then simulated.
TEST(CkptWriterTest, TmpfsAndRefusedDirectOrUringFallBackToPwrite) {
  ASSERT_TRUE(testing::IsTmpfs("/dev/shm")) << "/dev/shm is expected to be tmpfs";
  TmpfsRoundTrip();
  SetIoRefusalsForTesting(/*refuse_uring=*/false, /*refuse_direct=*/true);
  EXPECT_EQ(TmpfsRoundTrip(), IoPath::kSyncBuffered);
  SetIoRefusalsForTesting(/*refuse_uring=*/true, /*refuse_direct=*/false);
  auto engine = IoEngine::Create({});
  ASSERT_TRUE(engine.ok());
  EXPECT_FALSE((*engine)->uring());
  TempDir dir;
  WriterOptions wo;
  wo.engine = engine->get();
  auto w = FileWriter::Open(dir.path() + "/d.bin", wo);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ((*w)->io_path(), IoPath::kSyncDirect);
  SetIoRefusalsForTesting(false, false);
  auto data = RandomBytes(1048576 + 4096 * 3 + 1, 9);
  ASSERT_TRUE((*w)->Append(data.data(), data.size()).ok());
  ASSERT_TRUE((*w)->Finish().ok());
  std::vector<uint8_t> back(data.size());
  ASSERT_TRUE(ReadAt(dir.path() + "/d.bin", 0, data.size(), back.data()).ok());
  EXPECT_EQ(back, data);
}

TEST(CkptWriterTest, EngineReusedAcrossFilesAndBadOptions) {
  TempDir dir;
  auto engine = IoEngine::Create({});
  ASSERT_TRUE(engine.ok());
  EXPECT_EQ((*engine)->num_slots(), 9);
  auto data = RandomBytes(2 * 1048576 + 5, 3);
  for (int i = 0; i < 3; ++i) {
    WriterOptions wo;
    wo.engine = engine->get();
    auto w = FileWriter::Open(dir.path() + "/r" + std::to_string(i), wo);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Append(data.data() + i, data.size() - i).ok());
    auto size = (*w)->Finish();
    ASSERT_TRUE(size.ok());
    EXPECT_EQ(*size, data.size() - i);
    std::vector<uint8_t> back(data.size() - i);
    auto rd = FileReader::Open(dir.path() + "/r" + std::to_string(i), engine->get());
    ASSERT_TRUE(rd.ok());
    ASSERT_TRUE((*rd)->ReadAt(0, back.size(), back.data()).ok());
    EXPECT_EQ(std::memcmp(back.data(), data.data() + i, back.size()), 0);
  }
  IoOptions bad;
  bad.block_size = 1000;
  EXPECT_EQ(IoEngine::Create(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad.block_size = 4096;
  bad.queue_depth = 0;
  EXPECT_EQ(IoEngine::Create(bad).status().code(), absl::StatusCode::kInvalidArgument);
  auto w = FileWriter::Open(dir.path() + "/no/such/dir/x.bin", {});
  EXPECT_EQ(w.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(w.status().message()).find("no/such/dir/x.bin"), std::string::npos);
}

}  // namespace
}  // namespace tern::ckpt
