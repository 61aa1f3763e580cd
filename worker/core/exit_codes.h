// Exit statuses of `tern rank` that its launchers (tern-worker, ternd, `tern train --ranks`)
// tell apart from failures.
#pragma once

namespace tern {

// The rank stopped on an order (a "stop" on its control channel, or SIGTERM while it has one)
// after the step every rank agreed on, with that step's checkpoint committed (EX_TEMPFAIL):
// the job resumes from it and nothing is lost.
inline constexpr int kExitStoppedOnOrder = 75;
// The rank obeyed "abort" (as if killed by SIGTERM).
inline constexpr int kExitAborted = 143;

}  // namespace tern
