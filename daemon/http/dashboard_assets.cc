#include "daemon/http/dashboard_assets.h"

namespace tern::daemon {

const DashboardAsset* FindDashboardAsset(std::string_view path) {
  for (const auto& a : DashboardAssets()) {
    if (path == a.path) return &a;
  }
  return nullptr;
}

const char* DashboardContentType(std::string_view path) {
  auto ends = [&](std::string_view ext) {
    return path.size() >= ext.size() && path.substr(path.size() - ext.size()) == ext;
  };
  if (path == "/" || ends(".html")) return "text/html; charset=utf-8";
  if (ends(".js")) return "text/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  return "application/octet-stream";
}

}  // namespace tern::daemon
