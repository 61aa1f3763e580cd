// Human text for the rank output protocol: the JSON objects a rank prints one per line with
// --json ({"type":"step"|"eval"|"summary"|"event", ...}). The one formatter behind the
// `tern train` progress lines, the rank logs tern-worker writes, `tern watch` and the
// labelled event fields on the dashboard. Pure functions, any thread.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tern {

// (label, value) pairs, in display order.
using Fields = std::vector<std::pair<std::string, std::string>>;

// "step     12/100    | loss 3.2140 | lr 1.000e-03 |    12346 tok/s |   100.0 ms/step | ETA 8s"
std::string StepLine(const nlohmann::json& step);
// "eval at step 50: val_loss 3.1000"
std::string EvalLine(const nlohmann::json& eval);
// "done: 100 steps | final loss 3.2140 | val loss n/a | 12346 tok/s | 81.0 ms/step (median) |
// MFU 12.3% of 150.0 GFLOP/s sgemm peak (cached in PATH) | peak RSS 80 MiB"
std::string SummaryLine(const nlohmann::json& summary);

// Labelled fields of a structured event payload: `message` holding a JSON object (memory,
// checkpoint, resume, peak; unknown objects get their keys as labels). Empty for plain text.
Fields EventFields(const std::string& kind, const std::string& message);
// The fields as "label value, label value", or `message` itself when it is plain text.
std::string EventText(const std::string& kind, const std::string& message);

// The human line for one protocol line (what `tern train` prints for it without --json);
// nullopt for any other text. A step line not due under `steps_per_print` (it prints every
// steps_per_print-th step, the first and the last) gives "".
std::optional<std::string> HumanLine(const std::string& line, int steps_per_print);
std::optional<std::string> HumanLineOf(const nlohmann::json& object, int steps_per_print);

}  // namespace tern
