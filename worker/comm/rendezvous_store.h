// A tern::comm::Store over ternd's RendezvousService, for ranks launched by tern-worker
// (`tern rank --rendezvous ADDR --rendezvous-prefix JOB/ROUND --token-file F`). Every key is
// scoped by the prefix, so a new round never sees an old round's keys. Calls wait for the
// connection to be ready (ternd restarting) and retry idempotent calls (Set/Get/Wait) on
// UNAVAILABLE until their timeout. Thread-safe (gRPC stubs are). Its own library
// (tern_comm_rendezvous), so that only `tern rank` links gRPC, never the engine.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/comm/store.h"

namespace tern::comm {

// `token` is the worker bearer token itself (the contents of --token-file), "" for none.
// TLS when $TERN_TLS_CA names a CA file. Fails with UNAVAILABLE when ternd cannot be reached
// within `connect_timeout`.
absl::StatusOr<std::unique_ptr<Store>> ConnectRendezvousStore(
    const std::string& address, const std::string& prefix, const std::string& token,
    std::chrono::milliseconds connect_timeout = std::chrono::seconds(10));

}  // namespace tern::comm
