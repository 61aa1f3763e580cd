#include "infra/stop_signal.h"

#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <csignal>

namespace tern::infra {
namespace {

sigset_t StopSet() {
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  return stop;
}

}  // namespace

void BlockStopSignals() {
  const sigset_t stop = StopSet();
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

int WaitForStopSignal(const std::function<bool()>& give_up, std::chrono::milliseconds poll) {
  const sigset_t stop = StopSet();
  if (!give_up) {
    int sig = 0;
    while (sigwait(&stop, &sig) != 0) {
    }
    return sig;
  }
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(poll);
  const timespec tick{static_cast<time_t>(secs.count()),
                      static_cast<long>(std::chrono::nanoseconds(poll - secs).count())};
  while (true) {
    const int sig = sigtimedwait(&stop, nullptr, &tick);
    if (sig > 0) return sig;
    if (give_up()) return 0;
  }
}

}  // namespace tern::infra
