#include "daemon/state/cpu_overlap.h"

#include "absl/strings/str_cat.h"
#include "worker/core/cpu_set.h"
#include "worker/core/text.h"

namespace tern::daemon {

absl::Status CheckCpuSets(const tern::v1::RegisterRequest& req) {
  if (req.cpu_sets().empty()) return absl::OkStatus();
  if (req.cpu_sets_size() != req.slots()) {
    return absl::InvalidArgumentError(absl::StrCat("worker ", Printable(req.name()), ": ",
                                                   req.cpu_sets_size(), " CPU sets for ",
                                                   req.slots(), " slots (want one per slot)"));
  }
  for (int i = 0; i < req.cpu_sets_size(); ++i) {
    auto set = cpu::ParseCpuList(req.cpu_sets(i));
    if (!set.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("worker ", Printable(req.name()),
                                                     ": CPU set of slot ", i, ": ",
                                                     Printable(set.status().message())));
    }
  }
  return absl::OkStatus();
}

std::map<std::string, std::vector<std::string>> CpuOverlapWarnings(
    const std::vector<tern::v1::WorkerInfo>& workers) {
  struct Entry {
    const tern::v1::WorkerInfo* info;
    cpu::CpuList cpus;  // the union of its slots' sets
  };
  std::vector<Entry> entries;
  for (const auto& w : workers) {
    if (!w.connected() || w.cpu_sets().empty()) continue;
    cpu::CpuList all;
    for (const auto& text : w.cpu_sets()) {
      auto set = cpu::ParseCpuList(text);
      if (set.ok()) all.insert(all.end(), set->begin(), set->end());
    }
    std::sort(all.begin(), all.end());
    all.erase(std::unique(all.begin(), all.end()), all.end());
    entries.push_back({&w, std::move(all)});
  }
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& a : entries) {
    for (const auto& b : entries) {
      if (a.info == b.info || a.info->host() != b.info->host()) continue;
      const cpu::CpuList shared = cpu::Intersection(a.cpus, b.cpus);
      if (shared.empty()) continue;
      out[a.info->name()].push_back(
          absl::StrCat("CPUs ", cpu::FormatCpuList(shared), " overlap worker ", b.info->name(),
                       " on host ", a.info->host(),
                       ": their ranks compete for cores (start each worker with its own "
                       "--cpus)"));
    }
  }
  return out;
}

}  // namespace tern::daemon
