#include "worker/core/param_match.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tern {

std::vector<TensorShape> ShapesOf(const ParamTable& table) {
  std::vector<TensorShape> out;
  for (const auto& e : table.entries()) out.push_back({e.name, e.shape});
  return out;
}

absl::Status MatchTensors(const ParamTable& model, const std::vector<TensorShape>& found,
                          const std::string& source, const std::string& hint) {
  std::map<std::string, const std::vector<int64_t>*> have;
  std::vector<std::string> duplicate;
  for (const auto& t : found) {
    if (!have.emplace(t.name, &t.shape).second) duplicate.push_back(t.name);
  }
  std::vector<std::string> missing, misshaped, extra;
  for (const auto& e : model.entries()) {
    auto it = have.find(e.name);
    if (it == have.end()) {
      missing.push_back(e.name);
      continue;
    }
    if (*it->second != e.shape) {
      misshaped.push_back(absl::StrCat(e.name, " [saved ", absl::StrJoin(*it->second, "x"),
                                       ", model ", absl::StrJoin(e.shape, "x"), "]"));
    }
    have.erase(it);
  }
  for (const auto& [name, shape] : have) extra.push_back(name);
  if (missing.empty() && misshaped.empty() && extra.empty() && duplicate.empty()) {
    return absl::OkStatus();
  }
  std::vector<std::string> parts;
  // Every name, up to kMaxListed per kind (a hostile config can describe millions).
  constexpr size_t kMaxListed = 256;
  auto add = [&](const char* what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    std::vector<std::string> shown(v.begin(), v.begin() + std::min(v.size(), kMaxListed));
    parts.push_back(absl::StrCat(what, " (", v.size(), "): ", absl::StrJoin(shown, ", "),
                                 v.size() > kMaxListed ? ", ..." : ""));
  };
  add("missing", missing);
  add("extra", extra);
  add("mis-shaped", misshaped);
  add("duplicated", duplicate);
  return absl::FailedPreconditionError(
      absl::StrCat(source, " does not match this model (", model.entries().size(),
                   " parameters): ", absl::StrJoin(parts, "; "), hint));
}

}  // namespace tern
