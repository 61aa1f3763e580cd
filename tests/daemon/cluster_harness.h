// Test harness for the control plane: starts real ternd / tern-worker processes on an
// ephemeral loopback port in a temp dir, runs the `tern` CLI, and always kills what it
// started (destructors, plus PR_SET_PDEATHSIG if the test process dies).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tern::testing {

// A child process with stdout+stderr redirected to a file.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::vector<std::string>& env,
          const std::string& output_path);
  ~Process();  // SIGKILL + reap if still running
  pid_t pid() const { return pid_; }
  bool Running();
  void Signal(int sig);
  // Exit code (128+signal when killed), or -1 if still running after `timeout`.
  int Wait(std::chrono::milliseconds timeout);

 private:
  pid_t pid_ = -1;
  int status_ = -1;
};

struct CliResult {
  int code = -1;
  std::string out, err;
};

// Writes 400 short '%'-separated documents to <dir>/corpus.txt and returns its path.
std::string WriteCorpusText(const std::string& dir);

struct ClusterOptions {
  std::string heartbeat_timeout = "2s";
  std::string reconnect_grace = "10s";
  // Initialised, so that designated initializers may leave them out (-Wmissing-field-initializers).
  std::string admin_token{};  // when set, ternd requires it (and worker_token for workers)
  std::string worker_token{};
  std::string read_token{};  // when set, ternd gets it as --read-token-file
  // Extra ternd flags (e.g. {"--worker-expiry", "1s"}).
  std::vector<std::string> ternd_args{};
  // Start ternd with --checkpoint-root <dir>/ckroot (see Cluster::checkpoint_root()).
  bool checkpoint_root = false;
};

class Cluster {
 public:
  explicit Cluster(ClusterOptions options = {});
  ~Cluster();

  // Starts ternd (again, on the same port and state dir after the first time).
  bool StartTernd();
  void KillTernd(int sig);
  // Starts a worker running the fake rank; `env` is added to its environment (inherited by
  // its ranks, e.g. FAKE_RANK_STEP_MS=50).
  // `rank_binary` "" = the fake rank; "tern" = the real `tern` next to ternd.
  // `extra_args` go to tern-worker (e.g. --metrics 127.0.0.1:0).
  Process* AddWorker(const std::string& name, int slots, std::vector<std::string> env = {},
                     const std::string& token = "", const std::string& grace = "1s",
                     const std::string& rank_binary = "",
                     const std::vector<std::string>& extra_args = {});
  // Waits until `tern workers --json` shows `n` connected workers.
  bool WaitForWorkers(int n, std::chrono::milliseconds timeout);
  // Runs `tern <args>` against this cluster (TERN_COORDINATOR set), with TERN_TOKEN=token.
  CliResult Tern(const std::vector<std::string>& args, const std::string& token = "",
                 std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Starts `tern <args>` in the background (output to a file read by ReadOutput).
  std::unique_ptr<Process> TernAsync(const std::vector<std::string>& args, const std::string& out,
                                     const std::string& token = "");
  std::string ReadFile(const std::string& path) const;
  // Prepares the small corpus of WriteCorpusText as the dataset <dir>/corpus (and
  // <dir>/corpus_val when val_fraction > 0) with `tern data prepare`.
  CliResult PrepareCorpus(double val_fraction = 0);
  // Writes a small valid spec (fake-rank behaviour picked by `name`) and returns its path.
  std::string WriteSpec(const std::string& name, int train_iters, int nodes, int ranks_per_node);

  const std::string& dir() const { return dir_; }
  // ternd's --checkpoint-root ("" unless ClusterOptions::checkpoint_root).
  std::string checkpoint_root() const;
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  // ternd's dashboard/API/metrics port (--http 127.0.0.1:0, kept across restarts).
  int http_port() const { return http_port_; }
  std::string bin(const std::string& name) const;
  // The running ternd (null before StartTernd()).
  Process* ternd() const { return ternd_.get(); }
  std::string fake_rank() const;

 private:
  ClusterOptions options_;
  std::string dir_;
  int port_ = 0;
  int http_port_ = 0;
  int ternd_starts_ = 0;
  std::unique_ptr<Process> ternd_;
  std::vector<std::unique_ptr<Process>> workers_;
};

}  // namespace tern::testing
