// tern-bench-comm: collective throughput over loopback, ranks as threads of this process.
// Prints one JSON line per (collective, algorithm, ranks, size):
//   algbw_gbps = buffer bytes / seconds per call (buffer = the larger of input and output),
//   sent_gbps  = bytes this rank sent (byte accounting) / seconds per call.
// Usage: tern-bench-comm [--ranks 2,4] [--mib 1,16,64] [--iters 5]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "worker/comm/gloo_communicator.h"
#include "worker/comm/in_memory_store.h"

namespace tern::comm {
namespace {

std::vector<int> ParseList(const char* text) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int v = 0;
    if (absl::SimpleAtoi(part, &v) && v > 0) out.push_back(v);
  }
  return out;
}

struct Case {
  const char* name;
  ReduceScatterAlgorithm rs;
  const char* algo;
};

// Runs `iters` timed calls of one collective on rank `rank`; returns seconds per call.
double RunRank(Communicator& comm, const std::string& collective, size_t bytes, int iters) {
  const int n = comm.size();
  const size_t floats = bytes / sizeof(float) / static_cast<size_t>(n) * static_cast<size_t>(n);
  std::vector<float> a(floats, 1.0f), b(floats, 0.0f);
  const CollectiveOptions opts{std::chrono::seconds(60)};
  auto once = [&]() -> absl::Status {
    if (collective == "AllReduce") return comm.AllReduce(a, opts);
    if (collective == "ReduceScatter") {
      return comm.ReduceScatter(a, std::span<float>(b).first(floats / n), opts);
    }
    if (collective == "AllGather") {
      return comm.AllGather(std::as_bytes(std::span<const float>(a).first(floats / n)),
                            std::as_writable_bytes(std::span<float>(b)), opts);
    }
    if (collective == "AllToAll") {
      return comm.AllToAll(std::as_bytes(std::span<const float>(a)),
                           std::as_writable_bytes(std::span<float>(b)), opts);
    }
    return comm.Broadcast(std::as_writable_bytes(std::span<float>(a)), 0, opts);
  };
  (void)once();  // warm-up (connection buffers, page faults)
  (void)comm.Barrier(opts);
  (void)comm.TakeStats();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) {
    absl::Status st = once();
    if (!st.ok()) {
      std::fprintf(stderr, "%s\n", st.ToString().c_str());
      return -1;
    }
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iters;
}

void Bench(int n, const Case& c, const std::string& collective, int mib, int iters, int round) {
  InMemoryStore store;
  std::vector<double> seconds(static_cast<size_t>(n));
  std::vector<uint64_t> sent(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  const size_t bytes = static_cast<size_t>(mib) << 20;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      GlooOptions o;
      o.reduce_scatter = c.rs;
      auto comm = GlooCommunicator::Create(store, "bench" + std::to_string(round), r, n, o);
      if (!comm.ok()) {
        std::fprintf(stderr, "%s\n", comm.status().ToString().c_str());
        return;
      }
      seconds[r] = RunRank(**comm, collective, bytes, iters);
      sent[r] = (*comm)->stats().total_bytes() / static_cast<uint64_t>(iters);
    });
  }
  for (auto& t : threads) t.join();
  double worst = 0;
  for (double s : seconds) worst = std::max(worst, s);
  std::printf(
      "{\"bench\":\"comm\",\"collective\":\"%s\",\"algo\":\"%s\",\"ranks\":%d,\"mib\":%d,"
      "\"iters\":%d,\"seconds\":%.6f,\"algbw_gbps\":%.3f,\"sent_bytes_rank0\":%llu,"
      "\"sent_gbps\":%.3f}\n",
      collective.c_str(), c.algo, n, mib, iters, worst, bytes / worst / 1e9,
      static_cast<unsigned long long>(sent[0]), sent[0] / worst / 1e9);
  std::fflush(stdout);
}

int Main(int argc, char** argv) {
  std::vector<int> ranks{2, 4}, mibs{1, 16, 64};
  int iters = 5;
  std::vector<std::string> only;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--ranks")) ranks = ParseList(argv[i + 1]);
    if (!std::strcmp(argv[i], "--mib")) mibs = ParseList(argv[i + 1]);
    if (!std::strcmp(argv[i], "--iters")) iters = std::max(1, std::atoi(argv[i + 1]));
    if (!std::strcmp(argv[i], "--only")) only = absl::StrSplit(argv[i + 1], ',');
  }
  const Case gloo{"gloo", ReduceScatterAlgorithm::kRing, "gloo"};
  const Case rs_ring{"rs_ring", ReduceScatterAlgorithm::kRing, "ring"};
  const Case rs_a2a{"rs_a2a", ReduceScatterAlgorithm::kAllToAll, "alltoall"};
  int round = 0;
  for (int n : ranks) {
    for (int mib : mibs) {
      auto want = [&](const std::string& c) {
        return only.empty() || std::find(only.begin(), only.end(), c) != only.end();
      };
      if (want("AllReduce")) Bench(n, gloo, "AllReduce", mib, iters, round++);
      if (want("ReduceScatter")) Bench(n, rs_ring, "ReduceScatter", mib, iters, round++);
      if (want("ReduceScatter")) Bench(n, rs_a2a, "ReduceScatter", mib, iters, round++);
      if (want("AllGather")) Bench(n, gloo, "AllGather", mib, iters, round++);
      if (want("AllToAll")) Bench(n, gloo, "AllToAll", mib, iters, round++);
      if (want("Broadcast")) Bench(n, gloo, "Broadcast", mib, iters, round++);
    }
  }
  return 0;
}

}  // namespace
}  // namespace tern::comm

int main(int argc, char** argv) { return tern::comm::Main(argc, argv); }
