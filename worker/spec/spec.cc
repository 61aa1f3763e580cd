#include "worker/spec/spec.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/json_util.h>
#include <sys/stat.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "worker/core/bounded_input.h"
#include "worker/core/status.h"

namespace tern::spec {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using nlohmann::json;

// Reports every key that is not a field of `desc` (by proto or JSON name), and every boolean
// field whose value is not a JSON boolean, with its path.
void FindUnknownFields(const json& j, const Descriptor* desc, const std::string& path,
                       std::vector<std::string>* errors) {
  if (!j.is_object()) return;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const FieldDescriptor* f = desc->FindFieldByName(it.key());
    for (int i = 0; f == nullptr && i < desc->field_count(); ++i)
      if (desc->field(i)->json_name() == it.key()) f = desc->field(i);
    const std::string p = path.empty() ? it.key() : path + "." + it.key();
    if (f == nullptr) {
      errors->push_back(absl::StrCat("unknown field '", p, "'"));
      continue;
    }
    if (f->type() == FieldDescriptor::TYPE_MESSAGE && !f->is_repeated())
      FindUnknownFields(it.value(), f->message_type(), p, errors);
    // protobuf's JSON parser would take "true"/"false" strings; a spec says what it means.
    if (f->type() == FieldDescriptor::TYPE_BOOL && !f->is_repeated() && !it.value().is_boolean())
      errors->push_back(
          absl::StrCat(p, ": expected true or false, got ",
                       it.value().dump(-1, ' ', false, json::error_handler_t::replace)));
  }
}

// The deepest nesting of [ and { outside strings (nlohmann's parser recurses per level).
absl::Status ApplyOverride(json& root, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    return absl::InvalidArgumentError(
        absl::StrCat("--set '", assignment, "': expected key.path=value"));
  const std::string key = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  if (JsonNestingDepth(text) > kMaxSpecDepth)
    return absl::InvalidArgumentError(
        absl::StrCat("--set ", key, ": value nested deeper than ", kMaxSpecDepth, " levels"));
  json value = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) value = text;
  json* node = &root;
  std::vector<std::string> parts = absl::StrSplit(key, '.');
  for (const auto& part : parts) {
    if (part.empty())
      return absl::InvalidArgumentError(absl::StrCat("--set ", key, ": empty key component"));
  }
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    json& next = (*node)[parts[i]];
    if (next.is_null()) next = json::object();
    if (!next.is_object())
      return absl::InvalidArgumentError(
          absl::StrCat("--set ", key, ": '", parts[i], "' is not an object"));
    node = &next;
  }
  (*node)[parts.back()] = value;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ReadSmallTextFile(const std::string& path, const std::string& what,
                                              size_t limit) {
  return ReadBoundedFile(path, what, limit);
}

absl::StatusOr<tern::v1::JobSpec> ParseJobSpec(const std::string& text,
                                               const std::vector<std::string>& overrides,
                                               const std::string& source) {
  if (text.size() > kMaxSpecBytes)
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", text.size(), " bytes, more than ", kMaxSpecBytes));
  TERN_ASSIGN_OR_RETURN(json j, ParseJsonBounded(text, source, kMaxSpecDepth));
  if (!j.is_object())
    return absl::InvalidArgumentError(absl::StrCat(source, ": the job spec must be a JSON object"));
  for (const auto& o : overrides) {
    absl::Status st = ApplyOverride(j, o);
    if (!st.ok()) return st;
  }
  std::vector<std::string> errors;
  FindUnknownFields(j, tern::v1::JobSpec::descriptor(), "", &errors);
  if (!errors.empty())
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", absl::StrJoin(errors, "; ")));
  tern::v1::JobSpec spec;
  google::protobuf::util::JsonParseOptions opts;
  // Invalid UTF-8 is replaced rather than thrown on (nlohmann's default throws).
  const std::string normalized = j.dump(-1, ' ', false, json::error_handler_t::replace);
  auto st = google::protobuf::util::JsonStringToMessage(normalized, &spec, opts);
  if (!st.ok())
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", std::string(st.message())));
  return spec;
}

absl::StatusOr<tern::v1::JobSpec> LoadJobSpec(const std::string& path,
                                              const std::vector<std::string>& overrides) {
  auto text = ReadSmallTextFile(path, "job spec");
  if (!text.ok()) return text.status();
  return ParseJobSpec(*text, overrides, path);
}

std::string JobSpecToJson(const tern::v1::JobSpec& spec) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(spec, &out, opts);
  return out;
}

}  // namespace tern::spec
