#include "daemon/state/scheduler.h"

#include <algorithm>

namespace tern::daemon {
namespace {

class FifoGangScheduler : public Scheduler {
 public:
  std::vector<Placement> Schedule(const std::vector<PendingJob>& pending,
                                  std::vector<FreeSlots> free) override {
    std::vector<Placement> out;
    for (const PendingJob& job : pending) {
      std::vector<FreeSlots*> fit;
      for (auto& w : free) {
        if (w.free >= job.ranks_per_node) fit.push_back(&w);
      }
      if (static_cast<int>(fit.size()) < job.nodes) break;  // head of line waits
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

}  // namespace

std::unique_ptr<Scheduler> NewFifoGangScheduler() { return std::make_unique<FifoGangScheduler>(); }

}  // namespace tern::daemon
