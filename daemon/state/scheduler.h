// Scheduler: decides which pending jobs start now and on which workers. Pure (no I/O);
// called from the EventLoop thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace tern::daemon {

struct PendingJob {
  std::string id;
  int nodes = 1;           // distinct workers needed
  int ranks_per_node = 1;  // free slots needed on each of them
};

struct FreeSlots {
  std::string worker;
  int free = 0;
};

struct Placement {
  std::string job_id;
  std::vector<std::string> workers;  // node index -> worker; ranks n*rpn .. n*rpn+rpn-1
};

class Scheduler {
 public:
  virtual ~Scheduler() = default;
  // `pending` is in submission order. Returns the jobs to start now with their placement.
  virtual std::vector<Placement> Schedule(const std::vector<PendingJob>& pending,
                                          std::vector<FreeSlots> free) = 0;
};

// Strict FIFO gang scheduling: the oldest pending job starts as soon as `nodes` distinct
// workers each have `ranks_per_node` free slots; younger jobs wait behind it (no backfill,
// so a large job is never starved). Among fitting workers the ones with the fewest free
// slots are used first (best fit), ties by name.
std::unique_ptr<Scheduler> NewFifoGangScheduler();

}  // namespace tern::daemon
