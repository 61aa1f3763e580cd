#include "daemon/state/scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tern::daemon {
namespace {

class FifoGangScheduler : public Scheduler {
 public:
  std::vector<Placement> Schedule(const std::vector<PendingJob>& pending,
                                  std::vector<FreeSlots> free) override {
    std::vector<Placement> out;
    std::set<std::string> reserved;  // workers held for the oldest job that waits
    bool reservation = false;
    for (const PendingJob& job : pending) {
      std::vector<FreeSlots*> fit;
      for (auto& w : free) {
        if (w.free >= job.ranks_per_node && !reserved.count(w.worker)) fit.push_back(&w);
      }
      if (static_cast<int>(fit.size()) < job.nodes) {
        if (!reservation && CouldEverFit(job, free)) {
          // The workers that will hold it: those that can, closest to free first.
          std::vector<FreeSlots*> can;
          for (auto& w : free) {
            if (w.total >= job.ranks_per_node) can.push_back(&w);
          }
          std::sort(can.begin(), can.end(), [](const FreeSlots* a, const FreeSlots* b) {
            return a->free != b->free ? a->free > b->free : a->worker < b->worker;
          });
          for (int n = 0; n < job.nodes; ++n) reserved.insert(can[n]->worker);
          reservation = true;
        }
        continue;  // backfill: younger jobs may still start
      }
      std::sort(fit.begin(), fit.end(), [](const FreeSlots* a, const FreeSlots* b) {
        return a->free != b->free ? a->free < b->free : a->worker < b->worker;
      });
      Placement p;
      p.job_id = job.id;
      fit.resize(job.nodes);
      std::sort(fit.begin(), fit.end(),
                [](const FreeSlots* a, const FreeSlots* b) { return a->worker < b->worker; });
      for (FreeSlots* w : fit) {
        w->free -= job.ranks_per_node;
        p.workers.push_back(w->worker);
      }
      out.push_back(std::move(p));
    }
    return out;
  }
};

std::string SlotList(const std::vector<FreeSlots>& workers, bool free) {
  constexpr size_t kShown = 8;
  std::vector<std::string> parts;
  for (size_t i = 0; i < workers.size() && i < kShown; ++i)
    parts.push_back(absl::StrCat(free ? workers[i].free : workers[i].total));
  if (workers.size() > kShown) parts.push_back(absl::StrCat("... (", workers.size(), " in all)"));
  return absl::StrJoin(parts, ", ");
}

}  // namespace

bool CouldEverFit(const PendingJob& job, const std::vector<FreeSlots>& workers) {
  const auto able = std::count_if(workers.begin(), workers.end(), [&](const FreeSlots& w) {
    return w.total >= job.ranks_per_node;
  });
  return able >= job.nodes;
}

std::string PendingMessage(const PendingJob& job, const std::vector<FreeSlots>& workers) {
  std::string msg = absl::StrCat(
      "waiting for ", job.nodes, job.nodes == 1 ? " node" : " nodes", " x ", job.ranks_per_node,
      job.ranks_per_node == 1 ? " slot" : " slots", "; cluster has ", workers.size(),
      workers.size() == 1 ? " live worker" : " live workers");
  if (workers.empty()) return msg;
  absl::StrAppend(&msg, " with ", SlotList(workers, true), " free slots (of ",
                  SlotList(workers, false), ")");
  if (!CouldEverFit(job, workers)) {
    absl::StrAppend(&msg, "; it cannot start until workers with ", job.ranks_per_node,
                    job.ranks_per_node == 1 ? " slot" : " slots",
                    " join; younger jobs run meanwhile");
  }
  return msg;
}

std::unique_ptr<Scheduler> NewFifoGangScheduler() { return std::make_unique<FifoGangScheduler>(); }

}  // namespace tern::daemon
