// `tern`: the command-line interface. Flags and wiring only; commands live in *_commands.cc.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "client/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"tern: train transformer language models, locally or on a Tern cluster"};
  app.require_subcommand(1);
  int exit_code = 0;
  tern::cli::AddEngineCommands(app, &exit_code);
  tern::cli::AddRankCommand(app, &exit_code);
  tern::cli::AddClusterCommands(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  return exit_code;
}
