#include "infra/http/bounded_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tern::infra {
namespace {

using Clock = std::chrono::steady_clock;

// Starts a thread per task while none is idle, up to `max` threads; then tasks queue.
class ElasticPool : public httplib::TaskQueue {
 public:
  explicit ElasticPool(size_t max) : max_(max) {}
  ~ElasticPool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(std::move(fn));
    if (idle_ == 0 && threads_.size() < max_) {
      threads_.emplace_back([this] { Run(); });
    } else {
      cv_.notify_one();
    }
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();  // enqueue() is no longer called: the accept loop ended
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      ++idle_;
      cv_.wait(lock, [this] { return stop_ || !tasks_.empty(); });
      --idle_;
      if (tasks_.empty()) return;  // stopping, nothing left
      std::function<void()> fn = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
  }

  const size_t max_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  std::vector<std::thread> threads_;
  size_t idle_ = 0;
  bool stop_ = false;
};

// Waits until `fd` is ready for `events` or `deadline` passes; true when ready.
bool WaitFor(int fd, short events, Clock::time_point deadline) {
  while (true) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}

// The connection as cpp-httplib's request parser and response writer see it: reads are
// buffered and bounded by the current request's deadline, writes by the write timeout.
class DeadlineStream : public httplib::Stream {
 public:
  DeadlineStream(int sock, std::chrono::seconds write_timeout)
      : sock_(sock), write_timeout_(write_timeout) {}

  void StartRequest(Clock::time_point deadline) { deadline_ = deadline; }
  bool Buffered() const { return pos_ < len_; }

  bool is_readable() const override { return Buffered() || WaitFor(sock_, POLLIN, deadline_); }
  bool is_writable() const override {
    return WaitFor(sock_, POLLOUT, Clock::now() + write_timeout_);
  }
  ssize_t read(char* ptr, size_t size) override {
    if (!Buffered()) {
      if (!WaitFor(sock_, POLLIN, deadline_)) return -1;
      ssize_t n;
      do {
        n = ::recv(sock_, buf_, sizeof(buf_), 0);
      } while (n < 0 && errno == EINTR);
      if (n <= 0) return n;
      pos_ = 0;
      len_ = static_cast<size_t>(n);
    }
    const size_t n = std::min(size, len_ - pos_);
    std::memcpy(ptr, buf_ + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }
  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable()) return -1;
    ssize_t n;
    do {
      n = ::send(sock_, ptr, size, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    Address(::getpeername, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    Address(::getsockname, ip, port);
  }
  socket_t socket() const override { return sock_; }

 private:
  template <class Fn>
  void Address(Fn fn, std::string& ip, int& port) const {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    if (fn(sock_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return;
    char host[NI_MAXHOST] = {}, serv[NI_MAXSERV] = {};
    if (::getnameinfo(reinterpret_cast<sockaddr*>(&addr), len, host, sizeof(host), serv,
                      sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
      ip = host;
      port = std::atoi(serv);
    }
  }

  const int sock_;
  const std::chrono::seconds write_timeout_;
  Clock::time_point deadline_ = Clock::now();
  char buf_[4096];
  size_t pos_ = 0, len_ = 0;
};

void Refuse(int sock) {
  static const char kResponse[] =
      "HTTP/1.1 503 Service Unavailable\r\n"
      "Content-Type: application/json; charset=utf-8\r\n"
      "Retry-After: 1\r\n"
      "Connection: close\r\n"
      "Content-Length: 34\r\n"
      "\r\n"
      "{\"error\":\"too many connections\"}\r\n";
  (void)::send(sock, kResponse, sizeof(kResponse) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
}

}  // namespace

BoundedServer::BoundedServer(HttpLimits limits) : limits_(limits) {
  // A few threads beyond the cap answer the refused connections' 503 at once.
  const size_t threads = static_cast<size_t>(std::max(1, limits_.max_connections)) + 8;
  new_task_queue = [threads] { return new ElasticPool(threads); };
  set_keep_alive_max_count(static_cast<size_t>(std::max(1, limits_.max_requests_per_connection)));
  set_keep_alive_timeout(limits_.idle_timeout_s);
  set_read_timeout(limits_.request_timeout_s);
  set_write_timeout(limits_.write_timeout_s);
  set_payload_max_length(limits_.max_payload_bytes);
}

void BoundedServer::RaiseListenBacklog() {
  if (svr_sock_ != INVALID_SOCKET) (void)::listen(svr_sock_, limits_.listen_backlog);
}

bool BoundedServer::process_and_close_socket(socket_t sock) {
  const int open = ++open_;
  bool ret = false;
  if (open > limits_.max_connections) {
    Refuse(sock);
  } else {
    DeadlineStream strm(sock, std::chrono::seconds(limits_.write_timeout_s));
    for (int left = std::max(1, limits_.max_requests_per_connection); left > 0; --left) {
      // The next request must start within the idle timeout (the first one too); stop()
      // is noticed within a second.
      const auto idle_end = Clock::now() + std::chrono::seconds(limits_.idle_timeout_s);
      bool ready = strm.Buffered();
      while (!ready && svr_sock_ != INVALID_SOCKET && Clock::now() < idle_end) {
        ready = WaitFor(sock, POLLIN, std::min(idle_end, Clock::now() + std::chrono::seconds(1)));
      }
      if (!ready || svr_sock_ == INVALID_SOCKET) break;
      strm.StartRequest(Clock::now() + std::chrono::seconds(limits_.request_timeout_s));
      bool closed = false;
      ret = process_request(strm, /*close_connection=*/left == 1, closed, nullptr);
      if (!ret || closed) break;
    }
  }
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
  --open_;
  return ret;
}

}  // namespace tern::infra
