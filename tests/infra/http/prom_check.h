// A strict checker for the Prometheus text exposition format (version 0.0.4), for tests of
// ternd's and tern-worker's /metrics.
#pragma once

#include <map>
#include <string>

namespace tern::testing {

// "" when every line of `text` is a well-formed HELP, TYPE or sample line, every sample's
// family has HELP and TYPE lines before it, families are contiguous and no series repeats;
// else the first problem with its line number. Fills `samples` ("name{labels}" -> value,
// labels exactly as written) when given.
std::string CheckPrometheusText(const std::string& text,
                                std::map<std::string, double>* samples = nullptr);

}  // namespace tern::testing
