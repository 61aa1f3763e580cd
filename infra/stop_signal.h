// How ternd and tern-worker wait to be stopped: main() blocks SIGINT and SIGTERM before it
// starts any thread (so every thread inherits the mask and no handler runs on a random
// thread), then waits for one synchronously with sigwait. Both functions are for main()'s
// thread.
#pragma once

#include <chrono>
#include <functional>

namespace tern::infra {

// Blocks SIGINT and SIGTERM in the calling thread and every thread it starts afterwards, and
// ignores SIGPIPE (a peer that hangs up must not kill the process). Call before any thread
// starts.
void BlockStopSignals();

// Waits for SIGINT or SIGTERM and returns its number. With `give_up`, checks it every
// `poll` and returns 0 once it returns true (e.g. a fatal error on another thread).
int WaitForStopSignal(const std::function<bool()>& give_up = nullptr,
                      std::chrono::milliseconds poll = std::chrono::milliseconds(200));

}  // namespace tern::infra
