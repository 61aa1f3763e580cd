#include "infra/http/http_listener.h"

#include <httplib.h>

#include <chrono>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "infra/http/bounded_server.h"

namespace tern::infra {

absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& address,
                                                          const std::string& flag) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, " ", address, ": expected host:port with a port in 0..65535 (0 = pick one)"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return std::make_pair(host, port);
}

HttpListener::~HttpListener() { Stop(); }

absl::StatusOr<int> HttpListener::Start(httplib::Server* server, const std::string& address,
                                        const std::string& flag) {
  auto hp = SplitHostPort(address, flag);
  if (!hp.ok()) return hp.status();
  const auto& [host, want] = *hp;
  int port =
      want == 0 ? server->bind_to_any_port(host) : (server->bind_to_port(host, want) ? want : -1);
  if (port <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", flag, " ", address,
                     " --> hint: is the port in use? (port 0 picks a free one)"));
  }
  if (auto* bounded = dynamic_cast<BoundedServer*>(server)) bounded->RaiseListenBacklog();
  server_ = server;
  port_ = port;
  thread_ = std::thread([server] { server->listen_after_bind(); });
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!server->is_running() && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (!server->is_running()) {
    Stop();
    return absl::UnavailableError(absl::StrCat(flag, " ", address, ": server did not start"));
  }
  return port;
}

void HttpListener::Stop() {
  if (!server_) return;
  server_->stop();
  if (thread_.joinable()) thread_.join();
  server_ = nullptr;
}

}  // namespace tern::infra
