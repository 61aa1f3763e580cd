// RankSupervisor: launches rank processes (one per slot), tees their output into a log file,
// relays their JSON lines, stops them (SIGTERM, grace, SIGKILL on the process group), reaps
// them and keeps their exit codes until the coordinator has them. A rank crash never takes
// the agent down.
//
// Threads: one long-lived launcher thread forks every rank (so PR_SET_PDEATHSIG, which is
// tied to the forking thread, only fires when the agent itself dies) and escalates kills;
// one reader thread per rank. Public methods are thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "tern/v1/cluster.pb.h"
#include "worker/agent/rank_output.h"
#include "worker/core/cpu_set.h"

namespace tern::agent {

struct RankLaunch {
  RankId id;
  std::vector<std::string> argv;  // argv[0] is the executable path
  std::vector<std::string> env;   // extra NAME=VALUE entries (replacing inherited ones)
  int slot = -1;                  // the worker slot it occupies (-1 = none)
  cpu::CpuList cpus;              // bound to these CPUs before exec (empty = inherit)
  std::string log_path;           // stdout (JSON lines as human lines) + stderr appended here
  std::string work_dir;           // chdir before exec
  bool relay_metrics = false;     // relay step/eval/summary lines (rank 0 only)
  int steps_per_print = 10;       // step lines written to the log (every n-th, first, last)
};

class RankSupervisor {
 public:
  // `on_message` receives RankStarted, metric points and events (from any thread) and
  // `on_change` is called when a rank exits, so the uploader can run.
  RankSupervisor(std::chrono::milliseconds grace,
                 std::function<void(tern::v1::WorkerMessage)> on_message,
                 std::function<void()> on_change);
  ~RankSupervisor();  // stops every rank (grace, then SIGKILL) and joins

  // Starts the rank unless (job, round, rank) is already known (a resent assignment).
  void Launch(RankLaunch launch);
  // SIGTERM now, SIGKILL after the grace period, for every running rank of the job's
  // `round` (0 = every round).
  void Cancel(const std::string& job_id, int round = 0);
  // Writes one order line (JSON, see worker/engine/rank_control.h) to the control channel
  // (stdin) of every running rank of (job, round); returns how many ranks it reached.
  int Order(const std::string& job_id, int round, const std::string& line);
  void CancelAll();

  // Every rank still remembered: running, or exited (kept an hour for re-registration).
  std::vector<tern::v1::RankStatus> Snapshot();
  // Log bytes not yet uploaded (chunks of <= 64 KiB, `max_bytes` in total), then the exit
  // of every rank whose log is fully uploaded and whose exit was not sent yet.
  std::vector<tern::v1::WorkerMessage> CollectUploads(size_t max_bytes);
  // Upload positions from ternd (RegisterResponse.log_offsets) after a reconnect.
  void SetLogOffsets(const tern::v1::RegisterResponse& resp);
  // After a reconnect: send every remembered exit again (ternd ignores the ones it has).
  void ResendExits();
  int running();
  // Whether (job, round, rank) was launched already (running or remembered).
  bool Known(const RankId& id);
  // The slots of the ranks that still run (or wait to start).
  std::set<int> SlotsInUse();

 private:
  struct Rank {
    RankLaunch launch;
    pid_t pid = -1;
    int control_fd = -1;  // our end of the rank's stdin (a socket pair: no SIGPIPE)
    bool running = false;
    int exit_code = 0;
    std::string detail;
    bool exit_sent = false;
    int64_t log_shipped = 0;
    std::chrono::steady_clock::time_point kill_at{};  // SIGKILL deadline; {} = none
    std::chrono::steady_clock::time_point exited_at{};
    std::thread reader;
  };

  void LauncherLoop();
  void Spawn(Rank* r);
  void ReadOutput(Rank* r, int out_fd, int err_fd);
  void Exited(Rank* r, int wait_status);

  const std::chrono::milliseconds grace_;
  std::function<void(tern::v1::WorkerMessage)> on_message_;
  std::function<void()> on_change_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::list<std::unique_ptr<Rank>> ranks_;
  std::deque<Rank*> to_spawn_;
  bool stopping_ = false;
  std::thread launcher_;
};

}  // namespace tern::agent
