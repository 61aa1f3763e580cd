// RankControl: orders a launcher sends to a running rank while it trains. tern-worker writes
// them as JSON lines to the rank's stdin (`tern rank --control-stdin`):
//
//   {"op": "checkpoint", "round": R, "reason": "..."}  checkpoint after the current step, go on
//   {"op": "stop", "round": R, "reason": "..."}        checkpoint after the current step, exit
//   {"op": "abort", "round": R, "reason": "..."}       exit now (peers' collectives fail at once)
//
// An order for another round (a late order of a stopped round) is ignored. With a control
// channel, SIGTERM is a "stop" too (InstallSigtermAsStop): a batch system that signals every
// process of a job (Slurm's scancel --signal, --signal=TERM@T) gets a checkpoint at the current
// step, not a lost step; a second SIGTERM exits at once. Ranks receive an
// order at different moments; the trainer agrees on it by summing every rank's pending orders
// in the per-step loss all-reduce, so all ranks act after the same step (Trainer::Run).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "worker/core/exit_codes.h"

namespace tern::engine {

using tern::kExitAborted;
using tern::kExitStoppedOnOrder;

class RankControl {
 public:
  // `round` is the rank's cluster round (-1 = no round: every order applies).
  explicit RankControl(int64_t round = -1) : round_(round) {}

  // Applies one order line. INVALID_ARGUMENT names what is wrong with a malformed line (the
  // rank reports it and carries on). `on_abort` runs for an "abort" of this round.
  absl::Status Apply(std::string_view line);

  // Reads order lines from `fd` on a detached thread until EOF (the launcher went away) or
  // an abort. Bad lines are reported on stderr and skipped.
  void StartReader(int fd);

  // From now on SIGTERM to this process requests a stop (reason "SIGTERM"); a second SIGTERM
  // exits at once with kExitAborted. One RankControl per process may do this; it must outlive
  // the process's signals (allocate it for the process).
  void InstallSigtermAsStop();

  // Called for "abort" (default: writes a line to stderr and _exit(kExitAborted)).
  void set_on_abort(std::function<void(const std::string& reason)> f);

  bool stop_requested() const { return stop_.load(); }
  bool checkpoint_requested() const { return checkpoint_.load(); }
  void clear_checkpoint() { checkpoint_.store(false); }
  std::string reason() const;

  // Set by the trainer once it stopped on an order (checkpoint committed).
  void set_stopped(int64_t step) { stopped_step_.store(step); }
  int64_t stopped_step() const { return stopped_step_.load(); }  // -1 = did not stop

 private:
  const int64_t round_;
  std::atomic<bool> stop_{false}, checkpoint_{false}, by_signal_{false};
  std::atomic<int64_t> stopped_step_{-1};
  mutable std::mutex mu_;
  std::string reason_;
  std::function<void(const std::string&)> on_abort_;
};

}  // namespace tern::engine
