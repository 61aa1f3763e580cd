// Scheduler: decides which pending jobs start now and on which workers. Pure (no I/O);
// called from the EventLoop thread.
#pragma once

#include <memory>
#include <set>
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
  int free = 0;   // slots not occupied now
  int total = 0;  // slots the worker offers
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

// FIFO gang scheduling with backfill: jobs are considered oldest first; a job starts as soon
// as `nodes` distinct workers each have `ranks_per_node` free slots. A job that does not fit
// never blocks the jobs behind it. Against starvation, the oldest job that does not fit now
// but could once running jobs finish (enough workers offer `ranks_per_node` slots in all)
// reserves the workers it will use; younger jobs backfill on the other workers only. A job
// that the live workers could never hold reserves nothing. Among fitting workers the ones
// with the fewest free slots are used first (best fit), ties by name.
std::unique_ptr<Scheduler> NewFifoGangScheduler();

// Whether the live workers could ever hold `job` (each of `nodes` workers offering
// `ranks_per_node` slots in all), and the human line a PENDING job carries:
// "waiting for 3 nodes x 2 slots; cluster has 2 live workers with 2, 2 free slots (of 2, 2)".
bool CouldEverFit(const PendingJob& job, const std::vector<FreeSlots>& workers);
std::string PendingMessage(const PendingJob& job, const std::vector<FreeSlots>& workers);

}  // namespace tern::daemon
