#include "worker/core/cpu_set.h"

#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace tern::cpu {
namespace {

absl::StatusOr<int> ParseId(absl::string_view part, absl::string_view whole) {
  int v = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &v) || v < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cpulist \"", whole, "\": \"", part, "\" is not a CPU number"));
  }
  if (v > kMaxCpu) {
    return absl::InvalidArgumentError(absl::StrCat("cpulist \"", whole, "\": CPU ", v,
                                                   " is beyond the largest supported, ", kMaxCpu));
  }
  return v;
}

std::string ReadSmallFile(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Splits `items` (in order) into `k` contiguous, non-empty runs of near-equal length
// (k <= items.size()); returns the run boundaries as [begin, end) index pairs.
std::vector<std::pair<size_t, size_t>> EvenRuns(size_t n, size_t k) {
  std::vector<std::pair<size_t, size_t>> runs;
  for (size_t j = 0; j < k; ++j) runs.emplace_back(j * n / k, (j + 1) * n / k);
  return runs;
}

CpuList Sorted(CpuList v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

using Core = CpuList;  // the allowed CPUs of one core, siblings together

// `k` slots out of one node's cores (k <= CPUs of the node).
std::vector<CpuList> SplitNode(const std::vector<Core>& cores, size_t k) {
  std::vector<CpuList> out;
  if (cores.size() >= k) {
    for (auto [b, e] : EvenRuns(cores.size(), k)) {
      CpuList s;
      for (size_t i = b; i < e; ++i) s.insert(s.end(), cores[i].begin(), cores[i].end());
      out.push_back(Sorted(std::move(s)));
    }
    return out;
  }
  // Fewer cores than slots: siblings must be split; keep them adjacent in the order.
  CpuList flat;
  for (const auto& c : cores) flat.insert(flat.end(), c.begin(), c.end());
  for (auto [b, e] : EvenRuns(flat.size(), k)) {
    out.push_back(Sorted(CpuList(flat.begin() + b, flat.begin() + e)));
  }
  return out;
}

}  // namespace

absl::StatusOr<CpuList> ParseCpuList(absl::string_view text) {
  const absl::string_view whole = absl::StripAsciiWhitespace(text);
  if (whole.empty()) return absl::InvalidArgumentError("cpulist is empty");
  CpuList out;
  for (absl::string_view part : absl::StrSplit(whole, ',')) {
    if (absl::StripAsciiWhitespace(part).empty()) {
      return absl::InvalidArgumentError(absl::StrCat("cpulist \"", whole, "\": empty entry"));
    }
    const size_t dash = part.find('-');
    if (dash == absl::string_view::npos) {
      auto id = ParseId(part, whole);
      if (!id.ok()) return id.status();
      out.push_back(*id);
      continue;
    }
    auto lo = ParseId(part.substr(0, dash), whole);
    if (!lo.ok()) return lo.status();
    auto hi = ParseId(part.substr(dash + 1), whole);
    if (!hi.ok()) return hi.status();
    if (*hi < *lo) {
      return absl::InvalidArgumentError(
          absl::StrCat("cpulist \"", whole, "\": range \"", part, "\" ends before it starts"));
    }
    for (int c = *lo; c <= *hi; ++c) out.push_back(c);
  }
  return Sorted(std::move(out));
}

std::string FormatCpuList(const CpuList& cpus) {
  std::string out;
  for (size_t i = 0; i < cpus.size();) {
    size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += j == i ? absl::StrCat(cpus[i]) : absl::StrCat(cpus[i], "-", cpus[j]);
    i = j + 1;
  }
  return out;
}

bool Overlaps(const CpuList& a, const CpuList& b) { return !Intersection(a, b).empty(); }

CpuList Intersection(const CpuList& a, const CpuList& b) {
  CpuList out;
  std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

CpuList Difference(const CpuList& a, const CpuList& b) {
  CpuList out;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

const CpuInfo* CpuTopology::Find(int cpu) const {
  for (const auto& c : cpus) {
    if (c.cpu == cpu) return &c;
  }
  return nullptr;
}

CpuTopology ReadCpuTopology(const std::string& sysfs_root) {
  namespace fs = std::filesystem;
  CpuTopology topo;
  std::map<int, int> node_of;
  std::error_code ec;
  const fs::path nodes = fs::path(sysfs_root) / "devices/system/node";
  for (fs::directory_iterator it(nodes, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    int node = 0;
    if (name.rfind("node", 0) != 0 || !absl::SimpleAtoi(name.substr(4), &node)) continue;
    auto list = ParseCpuList(ReadSmallFile(it->path() / "cpulist"));
    if (!list.ok()) continue;  // a memory-only node has an empty cpulist
    for (int c : *list) node_of[c] = node;
  }
  const fs::path cpus = fs::path(sysfs_root) / "devices/system/cpu";
  for (fs::directory_iterator it(cpus, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    int id = 0;
    if (name.rfind("cpu", 0) != 0 || !absl::SimpleAtoi(name.substr(3), &id)) continue;
    if (id < 0 || id > kMaxCpu) continue;
    CpuInfo info;
    info.cpu = id;
    info.core = id;
    auto siblings = ParseCpuList(ReadSmallFile(it->path() / "topology/thread_siblings_list"));
    if (siblings.ok() && !siblings->empty()) info.core = siblings->front();
    int package = 0;
    if (absl::SimpleAtoi(
            absl::StripAsciiWhitespace(ReadSmallFile(it->path() / "topology/physical_package_id")),
            &package)) {
      info.package = package;
    }
    auto n = node_of.find(id);
    info.node = n == node_of.end() ? 0 : n->second;
    topo.cpus.push_back(info);
  }
  std::sort(topo.cpus.begin(), topo.cpus.end(),
            [](const CpuInfo& a, const CpuInfo& b) { return a.cpu < b.cpu; });
  return topo;
}

absl::StatusOr<CpuList> ThisProcessAffinity() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) != 0) {
    return absl::InternalError(absl::StrCat("sched_getaffinity: ", std::strerror(errno)));
  }
  CpuList out;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) out.push_back(c);
  }
  return out;
}

absl::StatusOr<CpuList> ProcessAffinityFromProc(pid_t pid) {
  const std::string path = absl::StrCat("/proc/", pid, "/status");
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::string line;
  while (std::getline(in, line)) {
    const std::string key = "Cpus_allowed_list:";
    if (line.rfind(key, 0) == 0) return ParseCpuList(line.substr(key.size()));
  }
  return absl::NotFoundError(absl::StrCat(path, " has no Cpus_allowed_list"));
}

absl::Status SetAffinity(pid_t pid, const CpuList& cpus) {
  if (cpus.empty()) return absl::InvalidArgumentError("cannot bind to an empty CPU set");
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cpus) {
    if (c < 0 || c > kMaxCpu) {
      return absl::InvalidArgumentError(absl::StrCat("CPU ", c, " is out of range"));
    }
    CPU_SET(c, &set);
  }
  if (::sched_setaffinity(pid, sizeof(set), &set) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("sched_setaffinity(", FormatCpuList(cpus), "): ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

cpu_set_t ToCpuSetT(const CpuList& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cpus) {
    if (c >= 0 && c <= kMaxCpu) CPU_SET(c, &set);
  }
  return set;
}

absl::StatusOr<CpuList> ResolveCpus(absl::string_view flag, absl::string_view text,
                                    const CpuList& allowed) {
  if (absl::StripAsciiWhitespace(text).empty()) return allowed;
  auto cpus = ParseCpuList(text);
  if (!cpus.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": ", cpus.status().message()));
  }
  const CpuList outside = Difference(*cpus, allowed);
  if (!outside.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", FormatCpuList(*cpus), ": CPU(s) ", FormatCpuList(outside),
                     " are not in this process's allowed CPUs (", FormatCpuList(allowed), ")"));
  }
  return cpus;
}

absl::StatusOr<SlotCpus> SplitCpus(const CpuTopology& topology, const CpuList& cpus_in, int slots) {
  if (slots < 1) {
    return absl::InvalidArgumentError(absl::StrCat("cannot split CPUs into ", slots, " slots"));
  }
  const CpuList cpus = Sorted(cpus_in);
  if (cpus.empty()) return absl::InvalidArgumentError("no CPUs to place ranks on");
  SlotCpus out;
  const size_t n = static_cast<size_t>(slots);
  if (n > cpus.size()) {
    out.shared = true;
    for (size_t i = 0; i < n; ++i) out.sets.push_back({cpus[i % cpus.size()]});
    return out;
  }
  // node -> (package, core) -> allowed CPUs of that core.
  std::map<int, std::map<std::pair<int, int>, Core>> by_node;
  for (int c : cpus) {
    const CpuInfo* info = topology.Find(c);
    const CpuInfo fallback{.cpu = c, .core = c, .package = 0, .node = 0};
    const CpuInfo& i = info ? *info : fallback;
    by_node[i.node][{i.package, i.core}].push_back(c);
  }
  std::vector<std::vector<Core>> nodes;  // in node order, cores in (package, core) order
  for (auto& [node, cores] : by_node) {
    std::vector<Core> v;
    for (auto& [key, core] : cores) v.push_back(std::move(core));
    nodes.push_back(std::move(v));
  }
  auto node_cpus = [&](size_t i) {
    size_t k = 0;
    for (const auto& c : nodes[i]) k += c.size();
    return k;
  };
  if (n < nodes.size()) {
    // Fewer slots than nodes: each slot takes whole nodes.
    for (auto [b, e] : EvenRuns(nodes.size(), n)) {
      CpuList s;
      for (size_t i = b; i < e; ++i) {
        for (const auto& c : nodes[i]) s.insert(s.end(), c.begin(), c.end());
      }
      out.sets.push_back(Sorted(std::move(s)));
    }
    return out;
  }
  // One slot per node, then the rest by the highest CPUs-per-slot (D'Hondt), capped at the
  // node's CPUs; ties go to the lower node.
  std::vector<size_t> per_node(nodes.size(), 1);
  for (size_t left = n - nodes.size(); left > 0; --left) {
    size_t best = nodes.size();
    double best_q = -1;
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (per_node[i] >= node_cpus(i)) continue;
      const double q = double(node_cpus(i)) / double(per_node[i] + 1);
      if (q > best_q) {
        best_q = q;
        best = i;
      }
    }
    ++per_node[best];  // n <= cpus.size() guarantees a node with room
  }
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (auto& s : SplitNode(nodes[i], per_node[i])) out.sets.push_back(std::move(s));
  }
  return out;
}

}  // namespace tern::cpu
