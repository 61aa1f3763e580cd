// absl::Status <-> grpc::Status at the gRPC boundary: the code is kept, the message carried.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/status/status.h"

namespace tern::infra {

// grpc::Status -> absl::Status, prefixed with `what` ("GetJob j-000001: ...").
absl::Status FromGrpc(const grpc::Status& s, const std::string& what);

// absl::Status -> grpc::Status, for a handler's reply.
grpc::Status ToGrpc(const absl::Status& s);

}  // namespace tern::infra
