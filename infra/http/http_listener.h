// HttpListener: runs a cpp-httplib server on its own thread at "host:port" (port 0 = an
// ephemeral port), for tern-worker's /metrics and ternd's dashboard. Start() returns once
// the server accepts connections (cpp-httplib 0.11 has no wait_until_ready: it polls
// is_running()). Start/Stop from one thread; the server's handlers run on its pool.
#pragma once

#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace tern::infra {

// Splits "host:port" ("[::1]:80" for IPv6). The port must be 0..65535.
absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& address,
                                                          const std::string& flag);

class HttpListener {
 public:
  HttpListener() = default;
  ~HttpListener();  // Stop()
  HttpListener(const HttpListener&) = delete;
  HttpListener& operator=(const HttpListener&) = delete;

  // Binds `server` (which must outlive Stop()) and serves it. Returns the bound port.
  // `flag` names the option in errors ("--http").
  absl::StatusOr<int> Start(httplib::Server* server, const std::string& address,
                            const std::string& flag);
  // Stops accepting, waits for the handlers to return and joins the thread.
  void Stop();
  int port() const { return port_; }

 private:
  httplib::Server* server_ = nullptr;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace tern::infra
