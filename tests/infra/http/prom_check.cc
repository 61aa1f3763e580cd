#include "tests/infra/http/prom_check.h"

#include <cmath>
#include <regex>
#include <set>
#include <sstream>

namespace tern::testing {
namespace {

const char kName[] = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const char kLabel[] = R"([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")";
const char kValue[] =
    R"((?:[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]Inf|NaN))";

double ParseValue(const std::string& v) {
  if (v == "NaN") return NAN;
  if (v == "+Inf") return INFINITY;
  if (v == "-Inf") return -INFINITY;
  return std::stod(v);
}

}  // namespace

std::string CheckPrometheusText(const std::string& text, std::map<std::string, double>* samples) {
  static const std::regex help_re(std::string("^# HELP (") + kName + ") (.*)$");
  static const std::regex type_re(std::string("^# TYPE (") + kName +
                                  ") (counter|gauge|histogram|summary|untyped)$");
  static const std::regex sample_re(std::string("^(") + kName + ")(\\{((?:" + kLabel + ")(?:," +
                                    kLabel + ")*,?)?\\})? (" + kValue + ")( -?[0-9]+)?$");
  static const std::regex label_name_re(R"(([a-zA-Z_][a-zA-Z0-9_]*)=")");
  if (text.empty()) return "empty exposition";
  if (text.back() != '\n') return "the text does not end with a newline";
  std::istringstream in(text);
  std::string line, current;
  std::set<std::string> helped, typed, finished, series;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    const std::string where = "line " + std::to_string(n) + " '" + line + "': ";
    std::smatch m;
    if (line.rfind("# HELP ", 0) == 0) {
      if (!std::regex_match(line, m, help_re)) return where + "malformed HELP";
      if (!helped.insert(m[1]).second) return where + "second HELP for the family";
      if (m[1] != current) {
        if (!current.empty()) finished.insert(current);
        if (finished.count(m[1])) return where + "family is not contiguous";
        current = m[1];
      }
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      if (!std::regex_match(line, m, type_re)) return where + "malformed TYPE";
      if (!typed.insert(m[1]).second) return where + "second TYPE for the family";
      if (m[1] != current) return where + "TYPE does not follow its family's HELP";
      continue;
    }
    if (line.empty() || line[0] == '#') return where + "unexpected comment or blank line";
    if (!std::regex_match(line, m, sample_re)) return where + "malformed sample";
    const std::string name = m[1];
    if (name != current) return where + "sample outside its family's block";
    if (!helped.count(name) || !typed.count(name)) return where + "sample without HELP and TYPE";
    const std::string labels = m[3];
    std::set<std::string> names;
    for (std::sregex_iterator it(labels.begin(), labels.end(), label_name_re), end; it != end;
         ++it) {
      if (!names.insert((*it)[1]).second) return where + "repeated label name";
    }
    const std::string key = name + "{" + labels + "}";
    if (!series.insert(key).second) return where + "repeated series";
    if (samples) (*samples)[key] = ParseValue(m[4]);
  }
  return "";
}

}  // namespace tern::testing
