#include "infra/net_address.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace tern::infra {
namespace {

// "host:port" / "[v6]:port" -> host, port.
bool SplitHostPort(const std::string& hp, std::string* host, std::string* port) {
  if (!hp.empty() && hp[0] == '[') {
    const size_t close = hp.find(']');
    if (close == std::string::npos || close + 1 >= hp.size() || hp[close + 1] != ':') return false;
    *host = hp.substr(1, close - 1);
    *port = hp.substr(close + 2);
  } else {
    const size_t colon = hp.rfind(':');
    if (colon == std::string::npos) return false;
    *host = hp.substr(0, colon);
    *port = hp.substr(colon + 1);
  }
  return !host->empty() && !port->empty();
}

std::string AddressText(const sockaddr* sa) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (sa->sa_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, buf, sizeof(buf));
  } else if (sa->sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, buf, sizeof(buf));
  }
  return buf;
}

}  // namespace

absl::StatusOr<std::string> LocalAddressTowards(const std::string& host_port) {
  std::string host, port;
  if (!SplitHostPort(host_port, &host, &port))
    return absl::InvalidArgumentError(absl::StrCat("'", host_port, "' is not host:port"));
  addrinfo hints{};
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0)
    return absl::UnavailableError(
        absl::StrCat("cannot resolve ", host_port, ": ", gai_strerror(rc)));
  std::string found, last_error;
  for (addrinfo* ai = res; ai != nullptr && found.empty(); ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      sockaddr_storage local{};
      socklen_t len = sizeof(local);
      if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0)
        found = AddressText(reinterpret_cast<sockaddr*>(&local));
    } else {
      last_error = std::strerror(errno);
    }
    ::close(fd);
  }
  freeaddrinfo(res);
  if (found.empty())
    return absl::UnavailableError(
        absl::StrCat("no route from this host to ", host_port, ": ", last_error));
  return found;
}

absl::Status CheckLocalAddress(const std::string& address) {
  ifaddrs* ifs = nullptr;
  if (getifaddrs(&ifs) != 0) return absl::OkStatus();  // cannot tell: let the bind decide
  bool local = false;
  for (ifaddrs* i = ifs; i != nullptr && !local; i = i->ifa_next)
    if (i->ifa_addr != nullptr && AddressText(i->ifa_addr) == address) local = true;
  freeifaddrs(ifs);
  if (local) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("--advertise-address ", address,
                   " is not an address of this host (peers must reach the ranks there)"));
}

}  // namespace tern::infra
