// Which local address other hosts reach this one at. A rank binds its collective transport
// (Gloo's TCP device) to the address its worker advertises, and peers on other hosts connect
// to it; the default is the address the kernel routes from towards ternd, which is an
// address every node that reaches ternd can normally reach too.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace tern::infra {

// The local IP address the kernel would use to reach `host_port` ("host:port", "[v6]:port"):
// a UDP socket is connected (nothing is sent) and its local address read back.
absl::StatusOr<std::string> LocalAddressTowards(const std::string& host_port);

// OK when `address` is an IP address assigned to an interface of this host (or a wildcard is
// refused: peers need a concrete address). INVALID_ARGUMENT naming it otherwise.
absl::Status CheckLocalAddress(const std::string& address);

}  // namespace tern::infra
