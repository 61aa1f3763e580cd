#include "infra/port_file.h"

#include <cstdio>
#include <fstream>

namespace tern::infra {

void WritePortFile(const std::string& path, int port) {
  if (path.empty()) return;
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp) << port << "\n";
  std::rename(tmp.c_str(), path.c_str());
}

}  // namespace tern::infra
