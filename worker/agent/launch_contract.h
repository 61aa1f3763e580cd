// The rank launch contract: how tern-worker starts one rank of an assignment.
//
//   <rank-binary> rank --spec-file <scratch>/<job>/spec.json --rank R --world-size W
//     --ranks-per-node M --rendezvous <coordinator addr> --rendezvous-prefix <job>/<round>
//     --threads T --json --control-stdin [--cpus LIST] [--token-file F] [--resume-if-any]
//     [--bind-address A]
//
// With CPU binding (tern-worker splits its --cpus into one set per slot, see
// worker/core/cpu_set.h) the rank is started bound to its slot's set (sched_setaffinity
// before exec, OMP_NUM_THREADS and OPENBLAS_NUM_THREADS = T), `--cpus LIST` names that set
// and T = resources.threads_per_rank if set, else the set's size; the rank refuses a T above
// the set's size. Without a set (no free slot) T = resources.threads_per_rank if set, else
// max(1, cores / slots) and nothing is bound. The spec file is the
// JobSpec in protobuf's JSON mapping with the proto field names; ternd has already filled in
// what it decides for the job (checkpoint.dir under --checkpoint-root). The rank runs in
// <scratch>/<job>/ with stdout+stderr appended to <scratch>/<job>/rank-R.log. Pure
// functions, any thread.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "tern/v1/cluster.pb.h"
#include "worker/core/cpu_set.h"

namespace tern::agent {

struct LaunchContext {
  std::string rank_binary;   // absolute path
  std::string coordinator;   // ternd address, also the rendezvous address
  std::string scratch;       // worker scratch dir
  std::string token_file;    // passed to ranks when non-empty
  int threads_per_slot = 1;  // cores / slots
  std::string bind_address;  // --bind-address for every rank ("" = the rank's default)
};

std::string JobDir(const LaunchContext& ctx, const std::string& job_id);
std::string SpecPath(const LaunchContext& ctx, const std::string& job_id);
std::string RankLogPath(const LaunchContext& ctx, const std::string& job_id, int rank);

// The compute threads of a rank bound to `cpus` (empty = not bound).
int RankThreads(const LaunchContext& ctx, const tern::v1::Assignment& a, const cpu::CpuList& cpus);

std::vector<std::string> BuildRankArgv(const LaunchContext& ctx, const tern::v1::Assignment& a,
                                       int rank, const cpu::CpuList& cpus = {});

// Writes `spec` as JSON (proto field names) to `path`, atomically (tmp + rename).
absl::Status WriteSpecFile(const std::string& path, const tern::v1::JobSpec& spec);

}  // namespace tern::agent
