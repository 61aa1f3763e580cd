// tern-bench-ckpt --bytes N --ranks R --dir DIR [--block-size B --queue-depth Q --reps K]
// R writer ranks (forked processes, or threads with --threads) each write N/R bytes of a
// pre-filled buffer as one durable checkpoint (rank files fsynced + manifest committed);
// median GiB/s over the reps. Then each rank reads its range back through the manifest
// (O_DIRECT, CRC32C verified, compared with the source). Prints one JSON line.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "nlohmann/json.hpp"
#include "tests/bench/common.h"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/crc32c.h"
#include "worker/checkpoint/fs_util.h"
#include "worker/checkpoint/manifest.h"
#include "worker/checkpoint/shard_writer.h"

namespace tern::ckpt {
namespace {

struct Config {
  uint64_t bytes = 1ull << 30;
  int ranks = 1;
  std::string dir = "/tmp";
  uint64_t block_size = 1 << 20;
  int queue_depth = 8;
  int reps = 3;
  int read_reps = 3;
  double settle_s = 1.0;
  bool threads = false;
  bool aligned = false;  // 4 KiB-aligned source buffers: zero-copy O_DIRECT from them
  bool keep = false;
};

ParamTable MakeTable(uint64_t total_elems) {
  ParamTable t;
  const uint64_t chunk = 16ull << 20;  // 64 MiB parameters
  int i = 0;
  for (uint64_t pos = 0; pos < total_elems; pos += chunk, ++i) {
    t.Add("param." + std::to_string(i), {static_cast<int64_t>(std::min(chunk, total_elems - pos))},
          true, i);
  }
  return t;
}

// One rank: its pre-filled source buffer, a read-back buffer and a reused I/O engine.
class Rank {
 public:
  Rank(const Config& cfg, int rank, const ParamTable& table, uint64_t lo, uint64_t hi)
      : cfg_(cfg), rank_(rank), table_(table), lo_(lo), hi_(hi) {
    const uint64_t bytes = (hi - lo) * 4;
    // malloc-style (16-byte aligned) memory goes through the staging copy; --aligned does not.
    src_raw_ = static_cast<uint8_t*>(std::aligned_alloc(kAlign, AlignUp(bytes) + kAlign));
    src_ = cfg.aligned ? src_raw_ : src_raw_ + 16;
    auto* f = reinterpret_cast<float*>(src_);
    for (uint64_t i = 0; i < hi - lo; ++i) f[i] = static_cast<float>((lo + i) % 1000003);
    if (cfg.read_reps > 0) back_.assign(hi - lo, 0.0f);  // touched before any timed read
    IoOptions io;
    io.block_size = cfg.block_size;
    io.queue_depth = cfg.queue_depth;
    auto e = IoEngine::Create(io);
    if (!e.ok()) {
      std::fprintf(stderr, "rank %d: %s\n", rank, e.status().ToString().c_str());
      std::exit(1);
    }
    engine_ = std::move(*e);
  }
  ~Rank() { std::free(src_raw_); }

  absl::StatusOr<RankShardResult> Write(const std::string& root, int64_t step) {
    WriterOptions wo;
    wo.engine = engine_.get();
    std::vector<Segment> segs = {{"master", lo_, hi_ - lo_, "f32", src_}};
    return WriteRankShard(root, step, rank_, segs, table_, wo);
  }
  absl::Status Read(const std::string& root, int64_t step) {
    IoOptions io;
    io.block_size = cfg_.block_size;
    io.queue_depth = cfg_.queue_depth;
    auto c = Checkpoint::Open(root, StepDirName(step), io);
    if (!c.ok()) return c.status();
    return (*c)->ReadState("master", lo_, hi_ - lo_, back_.data());
  }
  absl::Status Compare() const {  // untimed
    if (std::memcmp(back_.data(), src_, (hi_ - lo_) * 4) != 0) {
      return absl::DataLossError("read-back differs from the source");
    }
    return absl::OkStatus();
  }

 private:
  const Config& cfg_;
  int rank_;
  const ParamTable& table_;
  uint64_t lo_, hi_;
  uint8_t* src_raw_ = nullptr;
  uint8_t* src_ = nullptr;
  std::vector<float> back_;
  std::unique_ptr<IoEngine> engine_;
};

void WriteMsg(int fd, const std::string& s) {
  uint64_t n = s.size();
  if (::write(fd, &n, 8) != 8 || ::write(fd, s.data(), n) != static_cast<ssize_t>(n)) {
    std::perror("pipe write");
    std::exit(1);
  }
}

std::string ReadMsg(int fd) {
  uint64_t n = 0;
  if (::read(fd, &n, 8) != 8) return "";
  std::string s(n, '\0');
  for (uint64_t got = 0; got < n;) {
    ssize_t k = ::read(fd, s.data() + got, n - got);
    if (k <= 0) return "";
    got += static_cast<uint64_t>(k);
  }
  return s;
}

// Runs `op` ("W" or "R") at `step` on every rank; returns each rank's reply (JSON).
class Ranks {
 public:
  Ranks(const Config& cfg, const ParamTable& table) : cfg_(cfg), table_(table) {
    const uint64_t total = table.total();
    for (int r = 0; r <= cfg.ranks; ++r) bounds_.push_back(total * r / cfg.ranks);
    if (cfg.threads) {
      for (int r = 0; r < cfg.ranks; ++r) {
        local_.push_back(std::make_unique<Rank>(cfg, r, table, bounds_[r], bounds_[r + 1]));
      }
      return;
    }
    for (int r = 0; r < cfg.ranks; ++r) {
      int cmd[2], rep[2];
      if (::pipe(cmd) != 0 || ::pipe(rep) != 0) std::exit(1);
      pid_t pid = ::fork();
      if (pid == 0) {
        ::close(cmd[1]);
        ::close(rep[0]);
        Rank rank(cfg, r, table, bounds_[r], bounds_[r + 1]);
        WriteMsg(rep[1], "ready");
        while (true) {
          nlohmann::json req = nlohmann::json::parse(ReadMsg(cmd[0]), nullptr, false);
          if (req.is_discarded() || req["op"] == "Q") ::_exit(0);
          WriteMsg(rep[1], Serve(&rank, req["op"], req["root"], req["step"]).dump());
        }
      }
      ::close(cmd[0]);
      ::close(rep[1]);
      children_.push_back({pid, cmd[1], rep[0]});
    }
    for (auto& c : children_) ReadMsg(c.reply);
  }
  ~Ranks() {
    for (auto& c : children_) {
      WriteMsg(c.cmd, nlohmann::json{{"op", "Q"}}.dump());
      ::waitpid(c.pid, nullptr, 0);
    }
  }

  std::vector<nlohmann::json> Run(const std::string& op, const std::string& root, int64_t step) {
    std::vector<nlohmann::json> out(cfg_.ranks);
    if (cfg_.threads) {
      std::vector<std::thread> th;
      for (int r = 0; r < cfg_.ranks; ++r) {
        th.emplace_back([&, r] { out[r] = Serve(local_[r].get(), op, root, step); });
      }
      for (auto& t : th) t.join();
      return out;
    }
    const std::string req = nlohmann::json{{"op", op}, {"root", root}, {"step", step}}.dump();
    for (auto& c : children_) WriteMsg(c.cmd, req);
    for (int r = 0; r < cfg_.ranks; ++r) {
      out[r] = nlohmann::json::parse(ReadMsg(children_[r].reply), nullptr, false);
    }
    return out;
  }

 private:
  static nlohmann::json Serve(Rank* rank, const std::string& op, const std::string& root,
                              int64_t step) {
    if (op == "W") {
      auto res = rank->Write(root, step);
      if (!res.ok()) return {{"error", res.status().ToString()}};
      return res->ToJson();
    }
    absl::Status st = op == "C" ? rank->Compare() : rank->Read(root, step);
    if (!st.ok()) return {{"error", st.ToString()}};
    return {{"ok", true}};
  }

  struct Child {
    pid_t pid;
    int cmd;
    int reply;
  };
  const Config& cfg_;
  const ParamTable& table_;
  std::vector<uint64_t> bounds_;
  std::vector<std::unique_ptr<Rank>> local_;
  std::vector<Child> children_;
};

using bench::Median;

void Settle(double s) {
  ::sync();
  std::this_thread::sleep_for(std::chrono::duration<double>(s));
}

int Main(int argc, char** argv) {
  Config cfg;
  CLI::App app{"Tern checkpoint write/read bandwidth (FastPersist engine)"};
  app.add_option("--bytes", cfg.bytes, "total checkpoint bytes")->required();
  app.add_option("--ranks", cfg.ranks, "writer ranks")->check(CLI::Range(1, 256));
  app.add_option("--dir", cfg.dir, "parent directory (a fresh subdirectory is used)")->required();
  app.add_option("--block-size", cfg.block_size, "I/O block bytes");
  app.add_option("--queue-depth", cfg.queue_depth, "requests in flight per rank");
  app.add_option("--reps", cfg.reps, "timed checkpoint writes (median reported)");
  app.add_option("--read-reps", cfg.read_reps, "timed read-backs (0: none)");
  app.add_option("--settle-s", cfg.settle_s, "sync + pause before each timed run");
  app.add_flag("--threads", cfg.threads, "ranks as threads instead of processes");
  app.add_flag("--aligned", cfg.aligned, "4 KiB-aligned sources (zero-copy O_DIRECT)");
  app.add_flag("--keep", cfg.keep, "keep the files");
  CLI11_PARSE(app, argc, argv);

  const ParamTable table = MakeTable(cfg.bytes / 4);
  const uint64_t bytes = table.total() * 4;
  const std::string root = cfg.dir + "/tern-bench-ckpt-" + std::to_string(::getpid());
  if (!MakeDirs(root).ok()) return 1;
  Ranks ranks(cfg, table);
  std::vector<double> wr, rd;
  std::string io_path;
  int64_t step = 0;
  for (int rep = 0; rep < cfg.reps; ++rep) {
    if (step > 0) std::filesystem::remove_all(root + "/" + StepDirName(step));
    Settle(cfg.settle_s);
    ++step;
    const bench::Stopwatch watch;
    std::vector<RankShardResult> results;
    for (auto& j : ranks.Run("W", root, step)) {
      auto r = RankShardResult::FromJson(j);
      if (!r.ok()) {
        std::fprintf(stderr, "write failed: %s\n", j.dump().c_str());
        return 1;
      }
      io_path = r->io_path;
      results.push_back(std::move(*r));
    }
    absl::Status st = CommitManifest(root, step, results, table);
    if (!st.ok()) {
      std::fprintf(stderr, "commit failed: %s\n", st.ToString().c_str());
      return 1;
    }
    wr.push_back(bytes / watch.Seconds() / (1 << 30));
  }
  for (int rep = 0; rep < cfg.read_reps && step > 0; ++rep) {
    Settle(cfg.settle_s);
    const bench::Stopwatch watch;
    for (auto& j : ranks.Run("R", root, step)) {
      if (!j.contains("ok")) {
        std::fprintf(stderr, "read failed: %s\n", j.dump().c_str());
        return 1;
      }
    }
    rd.push_back(bytes / watch.Seconds() / (1 << 30));
    for (auto& j : ranks.Run("C", root, step)) {
      if (!j.contains("ok")) {
        std::fprintf(stderr, "compare failed: %s\n", j.dump().c_str());
        return 1;
      }
    }
  }
  if (!cfg.keep) std::filesystem::remove_all(root);
  nlohmann::json out = {{"bench", "ckpt"},
                        {"bytes", bytes},
                        {"ranks", cfg.ranks},
                        {"mode", cfg.threads ? "threads" : "processes"},
                        {"source", cfg.aligned ? "aligned(zero-copy)" : "unaligned(staged)"},
                        {"block_size", cfg.block_size},
                        {"queue_depth", cfg.queue_depth},
                        {"io_path", io_path},
                        {"crc32c", Crc32cIsHardware() ? "sse4.2" : "table"},
                        {"write_gibps_median", Median(wr)},
                        {"write_gibps", wr},
                        {"read_gibps_median", Median(rd)},
                        {"read_gibps", rd}};
  bench::PrintJsonLine(out);
  return 0;
}

}  // namespace
}  // namespace tern::ckpt

int main(int argc, char** argv) { return tern::ckpt::Main(argc, argv); }
