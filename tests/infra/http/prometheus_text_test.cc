// PrometheusText (the exposition writer of ternd's and tern-worker's /metrics), and the
// strict checker the other /metrics tests use.
#include "infra/http/prometheus_text.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>

#include "tests/infra/http/prom_check.h"

namespace tern::infra {
namespace {

using tern::testing::CheckPrometheusText;

TEST(PrometheusTextTest, EscapesAndFormats) {
  PrometheusText p;
  p.Family("tern_x", "gauge", "Help with \\ and\nnewline.");
  p.Sample(1.5, {{"job", "a\"b\\c\nd"}});
  p.Sample(NAN, {{"job", "nan"}});
  p.Sample(INFINITY, {{"job", "inf"}});
  p.Sample(42, {});
  p.Single("tern_y_total", "counter", "A counter.", 3);
  const std::string text = p.text();
  EXPECT_NE(text.find("# HELP tern_x Help with \\\\ and\\nnewline.\n"), std::string::npos) << text;
  EXPECT_NE(text.find("tern_x{job=\"a\\\"b\\\\c\\nd\"} 1.5\n"), std::string::npos) << text;
  EXPECT_NE(text.find("tern_x{job=\"nan\"} NaN\n"), std::string::npos);
  EXPECT_NE(text.find("tern_x{job=\"inf\"} +Inf\n"), std::string::npos);
  EXPECT_NE(text.find("tern_x 42\n"), std::string::npos);
  std::map<std::string, double> samples;
  EXPECT_EQ(CheckPrometheusText(text, &samples), "");
  EXPECT_EQ(samples.at("tern_y_total{}"), 3);
  EXPECT_FALSE(PrometheusText::ValidName("1abc"));
  EXPECT_FALSE(PrometheusText::ValidName("a-b"));
  EXPECT_TRUE(PrometheusText::ValidName("a:b_c9"));
}

TEST(PrometheusCheckTest, RejectsMalformedExpositions) {
  // The checker itself must catch what it is meant to catch.
  EXPECT_NE(CheckPrometheusText("x 1\n"), "");                                     // no HELP/TYPE
  EXPECT_NE(CheckPrometheusText("# HELP x h\n# TYPE x gauge\nx{a=\"1} 1\n"), "");  // bad quote
  EXPECT_NE(CheckPrometheusText("# HELP x h\n# TYPE x gauge\nx 1 2 3\n"), "");
  EXPECT_NE(CheckPrometheusText("# HELP x h\n# TYPE x gauge\nx one\n"), "");
  EXPECT_NE(CheckPrometheusText("# HELP x h\n# TYPE x gauge\nx 1\nx 2\n"), "");  // repeated
  EXPECT_NE(CheckPrometheusText("# HELP x h\n# TYPE x gauge\nx{a=\"1\",a=\"2\"} 1\n"), "");
  EXPECT_NE(CheckPrometheusText("# HELP x h\n# TYPE x gauge\nx 1"), "");  // no newline
  EXPECT_NE(CheckPrometheusText("# HELP x h\n# TYPE x gauge\n# HELP y h\n# TYPE y gauge\nx 1\n"),
            "");
  EXPECT_EQ(CheckPrometheusText("# HELP x h\n# TYPE x gauge\nx{a=\"q\\\"\"} -1.5e3\n"), "");
}

}  // namespace
}  // namespace tern::infra
