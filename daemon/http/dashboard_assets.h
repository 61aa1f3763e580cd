// The dashboard's files (daemon/dashboard/*, and Chart.js from Debian's libjs-chart.js),
// embedded into ternd at build time by daemon/dashboard/embed.cmake: ternd is one
// self-contained binary and the page loads nothing from another host.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

namespace tern::daemon {

struct DashboardAsset {
  const char* path;  // URL path: "/", "/assets/app.js", ...
  const unsigned char* data;
  size_t size;
  std::string_view text() const { return {reinterpret_cast<const char*>(data), size}; }
};

// Every embedded file (generated source).
const std::vector<DashboardAsset>& DashboardAssets();
// nullptr when `path` is not embedded.
const DashboardAsset* FindDashboardAsset(std::string_view path);
// "text/html; charset=utf-8", ... by the path's extension ("/" is HTML).
const char* DashboardContentType(std::string_view path);

}  // namespace tern::daemon
