#include "infra/http/prometheus_text.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "worker/core/status.h"

namespace tern::infra {

bool PrometheusText::ValidName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool PrometheusText::ValidLabelName(std::string_view name) {
  return ValidName(name) && name.find(':') == std::string_view::npos && name.rfind("__", 0) != 0;
}

std::string PrometheusText::EscapeLabelValue(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string PrometheusText::FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[40];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof(buf), "%.0f", v);
  } else {
    std::snprintf(buf, sizeof(buf), "%.17g", v);
  }
  return buf;
}

void PrometheusText::Family(std::string_view name, std::string_view type, std::string_view help) {
  TERN_CHECK(ValidName(name)) << "bad metric name " << std::string(name);
  TERN_CHECK(type == "gauge" || type == "counter" || type == "untyped") << std::string(type);
  TERN_CHECK(std::find(families_.begin(), families_.end(), name) == families_.end())
      << "metric family written twice: " << std::string(name);
  family_ = std::string(name);
  families_.push_back(family_);
  // HELP text escapes only backslash and newline.
  std::string h;
  for (char c : help) {
    if (c == '\\') {
      h += "\\\\";
    } else if (c == '\n') {
      h += "\\n";
    } else {
      h += c;
    }
  }
  out_ += "# HELP " + family_ + " " + h + "\n";
  out_ += "# TYPE " + family_ + " " + std::string(type) + "\n";
}

void PrometheusText::Sample(double value, const PromLabels& labels) {
  TERN_CHECK(!family_.empty()) << "Sample() before Family()";
  out_ += family_;
  if (!labels.empty()) {
    out_ += '{';
    for (size_t i = 0; i < labels.size(); ++i) {
      TERN_CHECK(ValidLabelName(labels[i].first)) << "bad label name " << labels[i].first;
      if (i) out_ += ',';
      out_ += labels[i].first + "=\"" + EscapeLabelValue(labels[i].second) + "\"";
    }
    out_ += '}';
  }
  out_ += ' ';
  out_ += FormatValue(value);
  out_ += '\n';
}

void PrometheusText::Single(std::string_view name, std::string_view type, std::string_view help,
                            double value) {
  Family(name, type, help);
  Sample(value);
}

}  // namespace tern::infra
