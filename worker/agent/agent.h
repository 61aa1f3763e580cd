// Agent: tern-worker's connection to ternd. Registers (reporting the ranks it still runs),
// holds the Session stream (heartbeats, rank reports and log uploads up; assignments and
// cancellations down), and reconnects with backoff when ternd goes away, leaving the ranks
// running. Threads: a connection thread (register + the session's writer loop) and, per
// session, a reader thread. Public methods are thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "tern/v1/cluster.grpc.pb.h"
#include "worker/agent/agent_metrics.h"
#include "worker/agent/launch_contract.h"
#include "worker/agent/rank_supervisor.h"

namespace tern::agent {

struct AgentOptions {
  std::string coordinator = "127.0.0.1:7070";
  std::string name;  // unique worker name
  std::string host;
  int slots = 1;
  std::string scratch;     // local dir for specs, logs
  std::string token;       // worker bearer token ("" = none)
  std::string token_file;  // its path, passed on to ranks
  std::string rank_binary;
  std::string tls_ca;                           // PEM root certs file: use TLS when set
  std::chrono::milliseconds grace{10000};       // SIGTERM -> SIGKILL
  std::chrono::milliseconds max_backoff{2000};  // reconnect backoff cap
  int cores = 1;  // CPUs this worker offers (--cpus, default its affinity mask)
  // One CPU set per slot, each rank bound to its slot's (see worker/core/cpu_set.h); empty =
  // no binding (threads = cores / slots).
  std::vector<cpu::CpuList> slot_cpus;
  // The address ranks bind their collective transport to and peers on other hosts connect to
  // (--advertise-address; default: the local address of the route to the coordinator).
  std::string advertise_address;
};

class Agent {
 public:
  explicit Agent(AgentOptions options);
  ~Agent();  // Stop()

  void Start();
  // Stops the ranks (grace, then SIGKILL) and disconnects.
  void Stop();
  // This node is going away: tells ternd, which stops the rounds running here (the ranks get
  // cancelled); see running_ranks() for when they are gone.
  void Drain(const std::string& reason);
  int running_ranks();
  // Set when the coordinator refused us for good (bad token, bad flags).
  absl::Status fatal();
  // The Prometheus text exposition of this agent's metrics (for --metrics). Not after Stop().
  std::string MetricsText();

 private:
  void ConnectLoop();
  // Registers and runs one session; returns why it ended.
  absl::Status RunSession(tern::v1::WorkerService::Stub* stub);
  void ReadLoop(grpc::ClientReaderWriter<tern::v1::WorkerMessage, tern::v1::CoordinatorMessage>* s);
  // Passes a RankOrder to the control channel of the ranks of its round.
  void HandleOrder(const tern::v1::RankOrder& o);
  void HandleAssignment(const tern::v1::Assignment& a);
  void Enqueue(tern::v1::WorkerMessage msg);
  void Wake();

  const AgentOptions options_;
  std::string instance_id_;  // random per process: see RegisterRequest.instance_id
  LaunchContext launch_;
  std::unique_ptr<RankSupervisor> supervisor_;
  AgentMetrics metrics_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<tern::v1::WorkerMessage> outbound_;  // buffered while disconnected (bounded)
  bool stopping_ = false;
  bool reader_done_ = false;
  absl::Status fatal_;
  std::thread thread_;
};

}  // namespace tern::agent
