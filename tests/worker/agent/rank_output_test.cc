#include "worker/agent/rank_output.h"

#include <gtest/gtest.h>

namespace tern::agent {
namespace {

const RankId kId{"j-000001", 2, 0};

TEST(ParseRankLine, StepLineBecomesAMetricPoint) {
  auto m = ParseRankLine(
      R"({"type":"step","step":12,"loss":3.25,"lr":0.001,"tokens_per_s":1500.5,"step_ms":80,"note":"x"})",
      kId, 1234);
  ASSERT_TRUE(m && m->has_metric());
  const auto& p = m->metric();
  EXPECT_EQ(p.job_id(), "j-000001");
  EXPECT_EQ(p.round(), 2);
  EXPECT_EQ(p.kind(), "step");
  EXPECT_EQ(p.step(), 12);
  EXPECT_EQ(p.time_ms(), 1234);
  EXPECT_DOUBLE_EQ(p.values().at("loss"), 3.25);
  EXPECT_DOUBLE_EQ(p.values().at("tokens_per_s"), 1500.5);
  EXPECT_EQ(p.values().size(), 4u) << "only numeric fields other than step";
}

TEST(ParseRankLine, EvalSummaryAndEvents) {
  auto e = ParseRankLine(R"({"type":"eval","step":100,"val_loss":2.5})", kId, 1);
  ASSERT_TRUE(e && e->has_metric());
  EXPECT_EQ(e->metric().kind(), "eval");
  EXPECT_DOUBLE_EQ(e->metric().values().at("val_loss"), 2.5);
  auto ev = ParseRankLine(R"({"type":"event","kind":"checkpoint","message":"saved step 100"})",
                          RankId{"j", 1, 3}, 1);
  ASSERT_TRUE(ev && ev->has_event());
  EXPECT_EQ(ev->event().kind(), "checkpoint");
  EXPECT_EQ(ev->event().message(), "saved step 100");
  EXPECT_EQ(ev->event().rank(), 3);
}

TEST(ParseRankLine, SummaryCarriesTheLastStep) {
  auto s = ParseRankLine(R"({"type":"summary","step":100,"steps":100,"mfu":0.1})", kId, 1);
  ASSERT_TRUE(s && s->has_metric());
  EXPECT_EQ(s->metric().kind(), "summary");
  EXPECT_EQ(s->metric().step(), 100);
}

TEST(ParseRankLine, PlainTextAndJunkAreNotMetrics) {
  for (const char* line : {"loading data", "", "{not json", R"({"type":"other","step":1})",
                           R"([1,2])", R"({"step":1,"loss":2})", "  {\"type\": 3}"}) {
    EXPECT_FALSE(ParseRankLine(line, kId, 1).has_value()) << line;
  }
}

}  // namespace
}  // namespace tern::agent
