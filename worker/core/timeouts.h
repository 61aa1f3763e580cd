// Default timeouts, each defined once, in the lowest layer so that comm, ZeRO, the spec
// pipeline, the engine and the CLI all refer to the same value.
#pragma once

#include <chrono>

namespace tern {

// The one default bound on waiting for peers: a collective, a rendezvous (store waits,
// connection setup) and a single store call. `tern train` / `tern rank
// --collective-timeout-s` override it per job.
inline constexpr std::chrono::milliseconds kDefaultCollectiveTimeout{30000};

}  // namespace tern
