#include "worker/optim/adamw.h"

#include <gtest/gtest.h>

#include <cmath>

namespace tern::optim {
namespace {

TEST(AdamW, ShardedStepsEqualOneFullStepAndRespectDecayFlags) {
  ParamTable t;
  t.Add("a.weight", {5, 3}, true, 0);
  t.Add("a.norm.weight", {3}, false, 0);
  t.Add("b.weight", {4}, true, 1);
  t.Add("b.bias", {4}, false, 1);
  const uint64_t n = t.total();
  std::vector<float> p(n), g(n);
  for (uint64_t i = 0; i < n; ++i) {
    p[i] = 0.1f * float(i % 7) - 0.3f;
    g[i] = 0.05f * float(i % 5) - 0.1f;
  }
  AdamWConfig cfg{0.01f, 0.9f, 0.95f, 1e-8f, 0.1f};
  std::vector<float> p_full = p, m_full(n, 0), v_full(n, 0);
  std::vector<float> p_shard = p, m_shard(n, 0), v_shard(n, 0);
  for (int step = 1; step <= 3; ++step) {
    AdamWStep(t, cfg, cfg.lr, step, 0, n, p_full.data(), g.data(), m_full.data(), v_full.data());
    // Three uneven shards that cut through parameters.
    const uint64_t cuts[] = {0, 7, 19, n};
    for (int s = 0; s < 3; ++s) {
      const uint64_t lo = cuts[s], hi = cuts[s + 1];
      AdamWStep(t, cfg, cfg.lr, step, lo, hi - lo, p_shard.data() + lo, g.data() + lo,
                m_shard.data() + lo, v_shard.data() + lo);
    }
  }
  for (uint64_t i = 0; i < n; ++i) EXPECT_FLOAT_EQ(p_full[i], p_shard[i]) << i;
  // Reference for one decayed and one non-decayed element after 3 steps (PyTorch's AdamW).
  auto reference = [&](uint64_t i, float wd) {
    double pp = p[i], m = 0, v = 0;
    for (int s = 1; s <= 3; ++s) {
      pp *= 1 - cfg.lr * wd;
      m = 0.9 * m + 0.1 * g[i];
      v = 0.95 * v + 0.05 * double(g[i]) * g[i];
      const double mh = m / (1 - std::pow(0.9, s)), vh = v / (1 - std::pow(0.95, s));
      pp -= cfg.lr * mh / (std::sqrt(vh) + cfg.eps);
    }
    return pp;
  };
  EXPECT_NEAR(p_full[1], reference(1, 0.1f), 1e-6);
  EXPECT_NEAR(p_full[16], reference(16, 0.0f), 1e-6);  // a.norm.weight: no decay
  EXPECT_NEAR(p_full[n - 1], reference(n - 1, 0.0f), 1e-6);
}

TEST(LrSchedule, DeepSpeedFormulas) {
  tern::v1::SchedulerConfig c;
  c.set_type("WarmupLR");
  c.mutable_params()->set_warmup_min_lr(0.0f);
  c.mutable_params()->set_warmup_max_lr(1.0f);
  c.mutable_params()->set_warmup_num_steps(10);
  auto s = LrSchedule::Create(c, 0.5f, 100);
  ASSERT_TRUE(s.ok());
  EXPECT_NEAR(s->At(0), 0.0f, 1e-7);  // log(1)/log(10)
  EXPECT_NEAR(s->At(4), std::log(5.0) / std::log(10.0), 1e-6);
  EXPECT_FLOAT_EQ(s->At(50), 1.0f);
  c.set_type("WarmupDecayLR");
  c.mutable_params()->set_warmup_type("linear");
  c.mutable_params()->set_total_num_steps(110);
  s = LrSchedule::Create(c, 0.5f, 100);
  ASSERT_TRUE(s.ok());
  EXPECT_NEAR(s->At(5), 0.5f, 1e-6);
  EXPECT_NEAR(s->At(60), 0.5f, 1e-6);  // (110-60)/(110-10)
  EXPECT_NEAR(s->At(110), 0.0f, 1e-6);
  c.set_type("WarmupCosineLR");
  c.mutable_params()->set_cos_min_ratio(0.1f);
  c.mutable_params()->set_warmup_min_ratio(0.0f);
  s = LrSchedule::Create(c, 2.0f, 100);
  ASSERT_TRUE(s.ok());
  EXPECT_NEAR(s->At(5), 2.0f * 0.5f, 1e-6);
  EXPECT_NEAR(s->At(10), 2.0f, 1e-6);
  EXPECT_NEAR(s->At(60), 2.0f * (0.1f + 0.9f * 0.5f), 1e-5);  // halfway: cos = 0
  EXPECT_NEAR(s->At(110), 0.2f, 1e-6);
  c.set_type("Cosine");
  EXPECT_FALSE(LrSchedule::Create(c, 1.0f, 10).ok());
}

}  // namespace
}  // namespace tern::optim
