// Subcommand registration for the `tern` CLI. Each group lives in its own file; a command's
// callback stores its exit code in `*exit_code` (0 ok, 1 runtime failure, 2 bad input).
#pragma once

#include <CLI/CLI.hpp>

namespace tern::cli {

// train, rank, describe, generate, data prepare, bench helpers (engine side; local, no daemon).
void AddEngineCommands(CLI::App& app, int* exit_code);
// rank (one rank of a job; started by `tern train --ranks N` and by tern-worker).
void AddRankCommand(CLI::App& app, int* exit_code);
// submit, jobs, show, watch, cancel, logs, workers (talk to ternd over gRPC).
void AddClusterCommands(CLI::App& app, int* exit_code);

}  // namespace tern::cli
