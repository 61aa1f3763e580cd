// CPU placement: Linux cpulists ("0-15,32-47"), the host's CPU topology (SMT siblings,
// packages, NUMA nodes from /sys), and the split of a set of CPUs into one disjoint set per
// rank slot. Used by tern-worker (--cpus), `tern train --ranks` (--bind-cores), `tern rank`
// (its placement report) and ternd (overlapping workers on one host).
//
// SplitCpus is pure (it takes a CpuTopology) so tests can feed synthetic machines.
#pragma once

#include <sched.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tern::cpu {

// CPU ids, sorted ascending, no duplicates.
using CpuList = std::vector<int>;

// Largest CPU id accepted (CPU_SETSIZE - 1: the fixed-size affinity masks used here).
inline constexpr int kMaxCpu = 1023;

// Parses Linux cpulist syntax: comma-separated ids and inclusive ranges ("0-3,8,10-11"),
// whitespace around the whole list ignored. Errors name the offending part.
absl::StatusOr<CpuList> ParseCpuList(absl::string_view text);
// The shortest cpulist for `cpus` ("0-3,8"); "" for none.
std::string FormatCpuList(const CpuList& cpus);

bool Overlaps(const CpuList& a, const CpuList& b);
CpuList Intersection(const CpuList& a, const CpuList& b);
CpuList Difference(const CpuList& a, const CpuList& b);  // in a, not in b

struct CpuInfo {
  int cpu = 0;
  int core = 0;     // the lowest CPU id among its SMT siblings (thread_siblings_list)
  int package = 0;  // physical_package_id
  int node = 0;     // NUMA node
};

struct CpuTopology {
  std::vector<CpuInfo> cpus;  // any order; CPUs missing here count as their own core, node 0
  const CpuInfo* Find(int cpu) const;
};

// Reads <sysfs_root>/devices/system/cpu/cpu*/topology/{thread_siblings_list,
// physical_package_id} and <sysfs_root>/devices/system/node/node*/cpulist. What is missing
// (containers, other kernels) falls back to one core per CPU, package 0, node 0.
CpuTopology ReadCpuTopology(const std::string& sysfs_root = "/sys");

// The CPUs this process may run on (sched_getaffinity).
absl::StatusOr<CpuList> ThisProcessAffinity();
// The CPUs process `pid` may run on, from /proc/<pid>/status's Cpus_allowed_list.
absl::StatusOr<CpuList> ProcessAffinityFromProc(pid_t pid);
// sched_setaffinity(pid, cpus); pid 0 = the calling thread.
absl::Status SetAffinity(pid_t pid, const CpuList& cpus);
// The mask for sched_setaffinity, built before fork so the child only makes the syscall.
// CPUs above kMaxCpu are left out (ParseCpuList refuses them).
cpu_set_t ToCpuSetT(const CpuList& cpus);

// The CPUs a `--cpus` style flag names: `allowed` when `text` is empty, else the parsed list,
// which must lie within `allowed` (the error names the CPUs outside it and `flag`).
absl::StatusOr<CpuList> ResolveCpus(absl::string_view flag, absl::string_view text,
                                    const CpuList& allowed);

struct SlotCpus {
  std::vector<CpuList> sets;  // one per slot, in slot order
  bool shared = false;        // more slots than CPUs: sets reuse CPUs (one CPU each)
};

// Splits `cpus` into `slots` disjoint sets, as even as the topology allows: slots are spread
// over NUMA nodes in proportion to the node's CPUs and never span two nodes while each node
// has a slot of its own; within a node a slot takes whole cores (SMT siblings together)
// unless the node has fewer cores than slots. With fewer slots than nodes a slot takes whole
// nodes. With more slots than CPUs the sets cannot be disjoint: slot i gets the single CPU
// cpus[i % cpus.size()] and `shared` is set (callers warn). Errors: slots < 1, no CPUs.
absl::StatusOr<SlotCpus> SplitCpus(const CpuTopology& topology, const CpuList& cpus, int slots);

}  // namespace tern::cpu
