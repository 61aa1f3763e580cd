// tern-bench-controlplane: load on one ternd. N concurrent WatchJob streams on one job whose
// metric points arrive at 10 Hz, M simulated workers heartbeating at 1 Hz over Session
// streams, and SubmitJob calls at a steady rate. Prints one JSON line: submit latency
// p50/p99, heartbeat rate, missed heartbeats (workers ternd lost or late beats), watch
// fan-out, ternd CPU and RSS.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "tern/v1/cluster.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

int64_t NowMs() {
  return std::chrono::duration_cast<milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::shared_ptr<grpc::Channel> Channel(const std::string& addr, int id) {
  grpc::ChannelArguments args;
  args.SetInt("tern.bench.channel", id);  // distinct args: a connection per channel
  return grpc::CreateCustomChannel(addr, grpc::InsecureChannelCredentials(), args);
}

// /proc/<pid>/stat utime+stime in seconds.
double CpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), {});
  auto p = s.rfind(')');
  std::istringstream rest(s.substr(p + 2));
  std::string f;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15; ++i) {
    rest >> f;
    if (i == 14) utime = std::stoull(f);
    if (i == 15) stime = std::stoull(f);
  }
  return double(utime + stime) / double(sysconf(_SC_CLK_TCK));
}

long StatusKb(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stol(line.substr(key.size() + 1));
  }
  return -1;
}

class Watcher : public grpc::ClientReadReactor<tern::v1::WatchJobResponse> {
 public:
  Watcher(tern::v1::JobService::Stub* stub, const std::string& job) {
    req_.set_job_id(job);
    stub->async()->WatchJob(&ctx_, &req_, this);
    StartRead(&resp_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (resp_.has_metric()) metrics.fetch_add(1, std::memory_order_relaxed);
    StartRead(&resp_);
  }
  void OnDone(const grpc::Status& s) override {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    cv_.notify_all();
  }
  void Cancel() { ctx_.TryCancel(); }
  void AwaitDone() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_; });
  }
  std::atomic<int64_t> metrics{0};

 private:
  grpc::ClientContext ctx_;
  tern::v1::WatchJobRequest req_;
  tern::v1::WatchJobResponse resp_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};

struct WorkerStats {
  std::atomic<int64_t> beats{0}, late{0}, metrics_sent{0};
};

// One simulated worker: Register + Session, a heartbeat a second; worker 0 also sends the
// watched job's metric points at 10 Hz.
void SimulatedWorker(std::shared_ptr<grpc::Channel> ch, int id, const std::string& job,
                     std::atomic<bool>* stop, WorkerStats* stats) {
  auto stub = tern::v1::WorkerService::NewStub(ch);
  tern::v1::RegisterRequest reg;
  reg.set_name("sim-" + std::to_string(id));
  reg.set_host("bench");
  reg.set_slots(1);
  tern::v1::RegisterResponse resp;
  grpc::ClientContext rctx;
  if (!stub->Register(&rctx, reg, &resp).ok()) return;
  grpc::ClientContext ctx;
  auto stream = stub->Session(&ctx);
  tern::v1::WorkerMessage hello;
  hello.mutable_hello()->set_worker_id(resp.worker_id());
  hello.mutable_hello()->set_session_id(resp.session_id());
  stream->Write(hello);
  std::thread reader([&] {
    tern::v1::CoordinatorMessage m;
    while (stream->Read(&m)) {
    }
  });
  auto next_beat = Clock::now() + milliseconds(id * 10 % 1000);  // spread the beats
  auto last_beat = Clock::now();
  int64_t step = 0;
  while (!stop->load()) {
    if (Clock::now() >= next_beat) {
      tern::v1::WorkerMessage hb;
      hb.mutable_heartbeat()->set_time_ms(NowMs());
      if (!stream->Write(hb)) break;
      stats->beats++;
      if (Clock::now() - last_beat > milliseconds(1500) && stats->beats > 100) stats->late++;
      last_beat = Clock::now();
      next_beat += milliseconds(1000);
    }
    if (id == 0) {
      tern::v1::WorkerMessage m;
      auto* p = m.mutable_metric();
      p->set_job_id(job);
      p->set_kind("step");
      p->set_step(++step);
      p->set_time_ms(NowMs());
      (*p->mutable_values())["loss"] = 10.0 / double(step);
      if (!stream->Write(m)) break;
      stats->metrics_sent++;
    }
    std::this_thread::sleep_for(milliseconds(100));
  }
  ctx.TryCancel();
  reader.join();
  stream->Finish();
}

struct Options {
  int watchers = 1000, workers = 100, submits_per_s = 20;
  double duration_s = 10;
  std::string ternd_bin;
};

// A ternd child process on an ephemeral loopback port, its state and log in a temporary folder.
struct Ternd {
  pid_t pid = -1;
  std::string dir;
  std::string addr;
};

// Starts ternd (without the HTTP dashboard) and waits up to 10 s for its port file.
std::optional<Ternd> StartTernd(const std::string& ternd_bin) {
  char tmpl[] = "/tmp/tern-bench-cp-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  const pid_t ternd = ::fork();
  if (ternd == 0) {
    int fd = ::open((dir + "/ternd.log").c_str(), O_WRONLY | O_CREAT, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execl(ternd_bin.c_str(), ternd_bin.c_str(), "--listen", "127.0.0.1:0", "--state-dir",
            (dir + "/state").c_str(), "--port-file", (dir + "/port").c_str(), "--http", "off",
            "--log-level", "warn", nullptr);
    ::_exit(127);
  }
  int port = 0;
  for (int i = 0; i < 500 && port == 0; ++i) {
    std::ifstream in(dir + "/port");
    in >> port;
    std::this_thread::sleep_for(milliseconds(20));
  }
  if (port == 0) {
    std::fprintf(stderr, "ternd (%s) did not start; see %s/ternd.log\n", ternd_bin.c_str(),
                 dir.c_str());
    ::kill(ternd, SIGKILL);
    return std::nullopt;
  }
  return Ternd{ternd, dir, "127.0.0.1:" + std::to_string(port)};
}

void StopTernd(const Ternd& t) {
  ::kill(t.pid, SIGTERM);
  ::waitpid(t.pid, nullptr, 0);
  std::filesystem::remove_all(t.dir);
}

// A job that stays PENDING (it needs 100000 nodes): the watched job, and what the submit load
// sends.
tern::v1::SubmitJobRequest PendingJob() {
  tern::v1::SubmitJobRequest submit;
  auto* spec = submit.mutable_spec();
  spec->set_name("bench");
  spec->mutable_model()->set_model_type("gpt2");
  spec->mutable_model()->set_n_embd(64);
  spec->mutable_model()->set_n_layer(2);
  spec->mutable_model()->set_n_head(4);
  spec->set_train_iters(100);
  spec->mutable_data()->set_path("/nonexistent/bench");  // required; ternd does not open it
  spec->mutable_resources()->set_nodes(100000);          // never schedulable: stays PENDING
  return submit;
}

// The steady background load: simulated workers (8 channels) and watch streams on one job
// (16 channels), running until Stop().
class Load {
 public:
  Load(const std::string& addr, const std::string& job, const Options& o) {
    for (int i = 0; i < o.workers; ++i) {
      sim_.emplace_back(SimulatedWorker, Channel(addr, 1000 + i % 8), i, job, &stop_, &workers_);
    }
    for (int i = 0; i < 16; ++i) {
      watch_channels_.push_back(Channel(addr, i));
      watch_stubs_.push_back(tern::v1::JobService::NewStub(watch_channels_.back()));
    }
    for (int i = 0; i < o.watchers; ++i) {
      watchers_.push_back(std::make_unique<Watcher>(watch_stubs_[i % 16].get(), job));
    }
  }

  const WorkerStats& workers() const { return workers_; }

  // Metric points delivered to all watchers so far.
  int64_t WatchItems() const {
    int64_t n = 0;
    for (const auto& w : watchers_) n += w->metrics;
    return n;
  }

  void Stop() {
    stop_ = true;
    for (auto& t : sim_) t.join();
    for (auto& w : watchers_) w->Cancel();
    for (auto& w : watchers_) w->AwaitDone();
  }

 private:
  std::atomic<bool> stop_{false};
  WorkerStats workers_;
  std::vector<std::thread> sim_;
  std::vector<std::shared_ptr<grpc::Channel>> watch_channels_;
  std::vector<std::unique_ptr<tern::v1::JobService::Stub>> watch_stubs_;
  std::vector<std::unique_ptr<Watcher>> watchers_;
};

struct Submits {
  std::vector<double> lat_ms;  // each call's latency
  int errors = 0;
};

// SubmitJob calls at `per_s` a second from t0 until `duration_s` have passed.
Submits SubmitAtRate(tern::v1::JobService::Stub* jobs, const tern::v1::SubmitJobRequest& submit,
                     int per_s, double duration_s, Clock::time_point t0) {
  Submits out;
  const auto period = std::chrono::microseconds(1000000 / std::max(1, per_s));
  auto next = Clock::now();
  while (Clock::now() - t0 < std::chrono::duration<double>(duration_s)) {
    std::this_thread::sleep_until(next);
    next += period;
    grpc::ClientContext ctx;
    tern::v1::SubmitJobResponse r;
    const auto s = Clock::now();
    if (!jobs->SubmitJob(&ctx, submit, &r).ok()) ++out.errors;
    out.lat_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - s).count());
  }
  return out;
}

int ConnectedWorkers(tern::v1::JobService::Stub* jobs) {
  tern::v1::ListWorkersResponse lw;
  {
    grpc::ClientContext ctx;
    jobs->ListWorkers(&ctx, {}, &lw);
  }
  int connected = 0;
  for (const auto& w : lw.workers()) connected += w.connected();
  return connected;
}

// What the load window measured on ternd and on the clients.
struct Measured {
  double elapsed_s = 0, ternd_cpu_s = 0;
  int64_t beats = 0, late_beats = 0, metrics_sent = 0, watch_items = 0;
  int connected = 0;
  long rss_kb = 0, hwm_kb = 0;
};

nlohmann::json Report(const Options& o, Submits sub, const Measured& m) {
  auto& lat_ms = sub.lat_ms;
  std::sort(lat_ms.begin(), lat_ms.end());
  auto pct = [&](double q) {
    return lat_ms.empty() ? 0.0 : lat_ms[size_t(q * (lat_ms.size() - 1))];
  };
  return {
      {"bench", "controlplane"},
      {"watchers", o.watchers},
      {"workers", o.workers},
      {"duration_s", m.elapsed_s},
      {"cores", std::thread::hardware_concurrency()},
      {"submits", lat_ms.size()},
      {"submit_errors", sub.errors},
      {"submit_p50_ms", pct(0.50)},
      {"submit_p99_ms", pct(0.99)},
      {"submit_max_ms", lat_ms.empty() ? 0.0 : lat_ms.back()},
      {"heartbeats_per_s", double(m.beats) / m.elapsed_s},
      {"late_heartbeats", m.late_beats},
      {"workers_connected_at_end", m.connected},
      {"missed_heartbeat_workers", o.workers - m.connected},
      {"metric_points_sent", m.metrics_sent},
      {"watch_items_delivered", m.watch_items},
      {"watch_fanout_per_s", double(m.watch_items) / m.elapsed_s},
      {"ternd_cpu_percent", 100.0 * m.ternd_cpu_s / m.elapsed_s},
      {"ternd_rss_mb", m.rss_kb / 1024.0},
      {"ternd_peak_rss_mb", m.hwm_kb / 1024.0},
  };
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  o.ternd_bin = std::filesystem::read_symlink("/proc/self/exe").parent_path().string() + "/ternd";
  CLI::App app{"tern-bench-controlplane: load benchmark for ternd"};
  app.add_option("--watchers", o.watchers, "concurrent WatchJob streams")->capture_default_str();
  app.add_option("--workers", o.workers, "simulated workers (1 Hz heartbeats)")
      ->capture_default_str();
  app.add_option("--submits-per-s", o.submits_per_s, "SubmitJob rate")->capture_default_str();
  app.add_option("--duration", o.duration_s, "seconds of steady load")->capture_default_str();
  app.add_option("--ternd", o.ternd_bin, "ternd binary")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const std::optional<Ternd> ternd = StartTernd(o.ternd_bin);
  if (!ternd) return 1;
  auto admin = Channel(ternd->addr, -1);
  auto jobs = tern::v1::JobService::NewStub(admin);
  const tern::v1::SubmitJobRequest submit = PendingJob();
  tern::v1::SubmitJobResponse watched;
  {
    grpc::ClientContext ctx;
    if (const grpc::Status st = jobs->SubmitJob(&ctx, submit, &watched); !st.ok()) {
      std::fprintf(stderr, "SubmitJob: %s\n", st.error_message().c_str());
      StopTernd(*ternd);
      return 1;
    }
  }
  Load load(ternd->addr, watched.job_id(), o);
  std::this_thread::sleep_for(milliseconds(1500));  // streams and sessions up

  const double cpu0 = CpuSeconds(ternd->pid);
  const auto t0 = Clock::now();
  const int64_t beats0 = load.workers().beats, metrics0 = load.workers().metrics_sent;
  const int64_t items0 = load.WatchItems();
  Submits sub = SubmitAtRate(jobs.get(), submit, o.submits_per_s, o.duration_s, t0);
  Measured m;
  m.elapsed_s = std::chrono::duration<double>(Clock::now() - t0).count();
  m.ternd_cpu_s = CpuSeconds(ternd->pid) - cpu0;
  m.watch_items = load.WatchItems() - items0;
  m.beats = load.workers().beats - beats0;
  m.metrics_sent = load.workers().metrics_sent - metrics0;
  m.connected = ConnectedWorkers(jobs.get());
  m.rss_kb = StatusKb(ternd->pid, "VmRSS");
  m.hwm_kb = StatusKb(ternd->pid, "VmHWM");

  load.Stop();
  StopTernd(*ternd);
  m.late_beats = load.workers().late.load();
  std::printf("%s\n", Report(o, std::move(sub), m).dump().c_str());
  return 0;
}
