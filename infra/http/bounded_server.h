// BoundedServer: a cpp-httplib Server whose connections cannot starve it. cpp-httplib runs
// each connection on one pool thread for its whole keep-alive life, so with its stock fixed
// pool a few dozen idle or half-sent connections leave no thread for a real request.
// BoundedServer replaces the per-connection loop (process_and_close_socket) and the pool:
//
//   - at most `max_connections` connections are served at once; one more is answered
//     "503 too many connections" at once and closed;
//   - threads are started on demand up to max_connections (+ a few for the 503s), so an
//     idle connection never holds up another one;
//   - a connection that sends nothing is closed after `idle_timeout_s` (before its first
//     request and between keep-alive requests), and a request's head and body must arrive
//     within `request_timeout_s` in all (a slow sender cannot hold a thread byte by byte);
//   - at most `max_requests_per_connection` requests per connection, bodies up to
//     `max_payload_bytes`, each write within `write_timeout_s`.
//
// Long-lived responses (server-sent events) hold a connection each: their owner caps them
// below max_connections.
#pragma once

#include <httplib.h>

#include <atomic>
#include <cstddef>

namespace tern::infra {

struct HttpLimits {
  int max_connections = 128;
  int listen_backlog = 512;
  int idle_timeout_s = 5;
  int request_timeout_s = 10;
  int write_timeout_s = 10;
  int max_requests_per_connection = 100;
  size_t max_payload_bytes = 64 << 10;
};

class BoundedServer : public httplib::Server {
 public:
  explicit BoundedServer(HttpLimits limits);
  const HttpLimits& limits() const { return limits_; }
  int open_connections() const { return open_.load(); }
  // After bind: cpp-httplib listens with a backlog of 5, so a burst of connections (hostile
  // or not) has the kernel drop SYNs and clients wait a second per retry. HttpListener calls
  // this right after binding.
  void RaiseListenBacklog();

 private:
  bool process_and_close_socket(socket_t sock) override;

  const HttpLimits limits_;
  std::atomic<int> open_{0};
};

}  // namespace tern::infra
