// Port files: how ternd and tern-worker tell a launcher (tests, deploy/quickstart.sh) which
// port they bound when asked for port 0. The file appears whole or not at all.
#pragma once

#include <string>

namespace tern::infra {

// Writes "<port>\n" to `path` through a temporary file renamed into place. Nothing when
// `path` is empty.
void WritePortFile(const std::string& path, int port);

}  // namespace tern::infra
