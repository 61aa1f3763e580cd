#include "tests/daemon/cluster_harness.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

namespace tern::testing {
namespace {

std::string Env(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v ? v : fallback;
}

}  // namespace

Process::Process(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                 const std::string& output_path) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> envs;
  for (char** e = environ; *e; ++e) envs.emplace_back(*e);
  for (const auto& e : env) envs.push_back(e);
  std::vector<char*> envp;
  for (auto& e : envs) envp.push_back(e.data());
  envp.push_back(nullptr);
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    int fd = ::open(output_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    ::execve(args[0], args.data(), envp.data());
    ::_exit(127);
  }
}

Process::~Process() {
  if (Running()) {
    ::kill(pid_, SIGKILL);
    Wait(std::chrono::seconds(5));
  }
}

bool Process::Running() {
  if (pid_ <= 0 || status_ >= 0) return false;
  int st;
  if (::waitpid(pid_, &st, WNOHANG) == pid_) {
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return false;
  }
  return true;
}

void Process::Signal(int sig) {
  if (Running()) ::kill(pid_, sig);
}

int Process::Wait(std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (Running()) {
    if (std::chrono::steady_clock::now() > end) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return status_;
}

Cluster::Cluster(ClusterOptions options) : options_(std::move(options)) {
  char tmpl[] = "/tmp/tern-cluster-XXXXXX";
  dir_ = ::mkdtemp(tmpl);
  if (!options_.admin_token.empty())
    std::ofstream(dir_ + "/admin.token") << options_.admin_token << "\n";
  if (!options_.worker_token.empty())
    std::ofstream(dir_ + "/worker.token") << options_.worker_token << "\n";
  if (!options_.read_token.empty())
    std::ofstream(dir_ + "/read.token") << options_.read_token << "\n";
}

Cluster::~Cluster() {
  workers_.clear();  // SIGKILL: their ranks die with them (PR_SET_PDEATHSIG)
  ternd_.reset();
  std::error_code ec;
  if (Env("TERN_KEEP_TEST_DIRS", "").empty()) std::filesystem::remove_all(dir_, ec);
}

std::string Cluster::bin(const std::string& name) const {
  return Env("TERN_BIN_DIR", "build/bin") + "/" + name;
}

std::string Cluster::fake_rank() const {
  return Env("TERN_SOURCE_DIR", ".") + "/tests/worker/agent/fake_rank.sh";
}

std::string Cluster::checkpoint_root() const {
  return options_.checkpoint_root ? dir_ + "/ckroot" : "";
}

bool Cluster::StartTernd() {
  const std::string port_file = dir_ + "/ternd.port";
  const std::string http_port_file = dir_ + "/ternd.http-port";
  std::filesystem::remove(port_file);
  std::filesystem::remove(http_port_file);
  std::vector<std::string> argv = {bin("ternd"),
                                   "--listen",
                                   "127.0.0.1:" + std::to_string(port_),
                                   "--state-dir",
                                   dir_ + "/state",
                                   "--port-file",
                                   port_file,
                                   "--http",
                                   "127.0.0.1:" + std::to_string(http_port_),
                                   "--http-port-file",
                                   http_port_file,
                                   "--heartbeat-timeout",
                                   options_.heartbeat_timeout,
                                   "--reconnect-grace",
                                   options_.reconnect_grace};
  if (options_.checkpoint_root) {
    argv.push_back("--checkpoint-root");
    argv.push_back(checkpoint_root());
  }
  if (!options_.admin_token.empty()) {
    argv.insert(argv.end(), {"--auth-token-file", dir_ + "/admin.token"});
  }
  if (!options_.worker_token.empty()) {
    argv.insert(argv.end(), {"--worker-token-file", dir_ + "/worker.token"});
  }
  if (!options_.read_token.empty()) {
    argv.insert(argv.end(), {"--read-token-file", dir_ + "/read.token"});
  }
  argv.insert(argv.end(), options_.ternd_args.begin(), options_.ternd_args.end());
  ternd_ = std::make_unique<Process>(argv, std::vector<std::string>{},
                                     dir_ + "/ternd." + std::to_string(ternd_starts_++) + ".log");
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < end && ternd_->Running()) {
    std::ifstream in(port_file);
    int port = 0;
    if (in >> port && port > 0) {
      port_ = port;
      std::ifstream http_in(http_port_file);  // written before the gRPC port file
      http_in >> http_port_;
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

void Cluster::KillTernd(int sig) {
  if (!ternd_) return;
  ternd_->Signal(sig);
  ternd_->Wait(std::chrono::seconds(5));
}

Process* Cluster::AddWorker(const std::string& name, int slots, std::vector<std::string> env,
                            const std::string& token, const std::string& grace,
                            const std::string& rank_binary,
                            const std::vector<std::string>& extra_args) {
  std::vector<std::string> argv = {bin("tern-worker"),
                                   "--coordinator",
                                   address(),
                                   "--name",
                                   name,
                                   "--slots",
                                   std::to_string(slots),
                                   "--scratch",
                                   dir_ + "/" + name,
                                   "--rank-binary",
                                   rank_binary.empty() ? fake_rank() : bin(rank_binary),
                                   "--grace",
                                   grace,
                                   "--max-backoff",
                                   "500ms"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  if (!token.empty()) {
    const std::string f = dir_ + "/" + name + ".token";
    std::ofstream(f) << token << "\n";
    argv.insert(argv.end(), {"--token-file", f});
  }
  workers_.push_back(std::make_unique<Process>(argv, env, dir_ + "/" + name + ".log"));
  return workers_.back().get();
}

bool Cluster::WaitForWorkers(int n, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    CliResult r = Tern({"workers", "--json"}, options_.admin_token);
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    int connected = 0;
    if (j.is_object() && j.contains("workers")) {
      for (const auto& w : j["workers"]) connected += w.value("connected", false) ? 1 : 0;
    }
    if (connected >= n) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

CliResult Cluster::Tern(const std::vector<std::string>& args, const std::string& token,
                        std::chrono::milliseconds timeout) {
  static int n = 0;
  const std::string base = dir_ + "/cli." + std::to_string(n++);
  std::vector<std::string> argv = {bin("tern")};
  argv.insert(argv.end(), args.begin(), args.end());
  // Separate stdout and stderr: wrap in sh for the redirection.
  std::string cmd;
  for (const auto& a : argv) cmd += "'" + a + "' ";
  cmd += "> '" + base + ".out' 2> '" + base + ".err'";
  std::vector<std::string> env = {"TERN_COORDINATOR=" + address(), "TERN_TOKEN=" + token};
  CliResult r;
  {
    Process p({"/bin/sh", "-c", cmd}, env, "/dev/null");
    r.code = p.Wait(timeout);
  }
  r.out = ReadFile(base + ".out");
  r.err = ReadFile(base + ".err");
  return r;
}

std::unique_ptr<Process> Cluster::TernAsync(const std::vector<std::string>& args,
                                            const std::string& out, const std::string& token) {
  std::vector<std::string> argv = {bin("tern")};
  argv.insert(argv.end(), args.begin(), args.end());
  return std::make_unique<Process>(
      argv, std::vector<std::string>{"TERN_COORDINATOR=" + address(), "TERN_TOKEN=" + token}, out);
}

std::string Cluster::ReadFile(const std::string& path) const {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string WriteCorpusText(const std::string& dir) {
  const std::string path = dir + "/corpus.txt";
  std::ofstream text(path);
  for (int i = 0; i < 400; ++i)
    text << "the quick brown fox " << i << " jumps over the lazy dog\n%\n";
  return path;
}

CliResult Cluster::PrepareCorpus(double val_fraction) {
  std::vector<std::string> args = {
      "data",     "prepare",        "--tokenizer",     "byte", "--input", WriteCorpusText(dir_),
      "--output", dir_ + "/corpus", "--doc-separator", "%"};
  if (val_fraction > 0) args.insert(args.end(), {"--val-fraction", std::to_string(val_fraction)});
  return Tern(args);
}

std::string Cluster::WriteSpec(const std::string& name, int train_iters, int nodes,
                               int ranks_per_node) {
  nlohmann::json spec = {
      {"name", name},
      {"model", {{"model_type", "gpt2"}, {"n_embd", 64}, {"n_layer", 2}, {"n_head", 4}}},
      {"data", {{"path", dir_ + "/no-data"}}},  // the fake rank reads none
      {"train_iters", train_iters},
      {"resources", {{"nodes", nodes}, {"ranks_per_node", ranks_per_node}}}};
  const std::string path = dir_ + "/" + name + ".json";
  std::ofstream(path) << spec.dump(2) << "\n";
  return path;
}

}  // namespace tern::testing
