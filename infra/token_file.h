// Bearer-token files, as given to ternd (--auth-token-file, --worker-token-file,
// --read-token-file), tern-worker and `tern rank` (--token-file) and the CLI (--token-file,
// $TERN_TOKEN_FILE): one token per non-empty line, surrounding whitespace ignored. A client
// sends the first token; ternd accepts any of them.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tern::infra {

// The tokens of `path`, in file order. NOT_FOUND when the file cannot be read,
// INVALID_ARGUMENT when it holds no token.
absl::StatusOr<std::vector<std::string>> ReadTokenFile(const std::string& path);

}  // namespace tern::infra
