#include "client/cluster/spec_loader.h"

#include <google/protobuf/util/json_util.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace tern::cluster {
namespace {

absl::Status ApplyOverride(nlohmann::json* doc, const std::string& origin, const std::string& o) {
  const auto eq = o.find('=');
  if (eq == std::string::npos || eq == 0) {
    return absl::InvalidArgumentError(absl::StrCat("--set ", o, ": expected key.path=value"));
  }
  const std::string path = o.substr(0, eq);
  const std::string text = o.substr(eq + 1);
  nlohmann::json value = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) value = text;
  nlohmann::json* node = doc;
  std::vector<std::string> parts = absl::StrSplit(path, '.');
  for (size_t i = 0; i < parts.size(); ++i) {
    if (parts[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--set ", o, ": empty key in ", path));
    }
    if (node->is_null()) *node = nlohmann::json::object();
    if (!node->is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--set ", o, ": ", parts[i - 1], " in ", origin, " is not an object"));
    }
    node = &(*node)[parts[i]];
  }
  *node = std::move(value);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<tern::v1::JobSpec> ParseJobSpec(const std::string& json, const std::string& origin,
                                               const std::vector<std::string>& overrides) {
  nlohmann::json doc = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    // Re-parse with exceptions for the position of the error.
    std::string where = "invalid JSON";
    try {
      nlohmann::json again = nlohmann::json::parse(json);
      (void)again;
    } catch (const nlohmann::json::parse_error& e) {
      where = e.what();
    }
    return absl::InvalidArgumentError(absl::StrCat(origin, ": ", where));
  }
  if (!doc.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": the job spec must be a JSON object"));
  }
  for (const auto& o : overrides) {
    if (auto st = ApplyOverride(&doc, origin, o); !st.ok()) return st;
  }
  tern::v1::JobSpec spec;
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = false;
  auto st = google::protobuf::util::JsonStringToMessage(doc.dump(), &spec, opts);
  if (!st.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": ", std::string(st.message().data(), st.message().size())));
  }
  return spec;
}

absl::StatusOr<tern::v1::JobSpec> LoadJobSpec(const std::string& path,
                                              const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read spec file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseJobSpec(ss.str(), path, overrides);
}

}  // namespace tern::cluster
