// CpuOverlapWarnings: connected workers on one host whose CPU sets overlap.
#include "daemon/state/cpu_overlap.h"

#include <gtest/gtest.h>

namespace tern::daemon {
namespace {

tern::v1::WorkerInfo Worker(const std::string& name, const std::string& host,
                            std::vector<std::string> sets, bool connected = true) {
  tern::v1::WorkerInfo w;
  w.set_name(name);
  w.set_host(host);
  w.set_connected(connected);
  for (auto& s : sets) w.add_cpu_sets(s);
  return w;
}

TEST(CpuOverlapTest, SameHostOverlappingSetsWarnBothWorkers) {
  auto warnings = CpuOverlapWarnings({Worker("a", "h1", {"0-3", "4-7"}), Worker("b", "h1", {"6-9"}),
                                      Worker("c", "h1", {"10-11"}), Worker("d", "h2", {"0-7"})});
  ASSERT_EQ(warnings["a"].size(), 1u);
  EXPECT_EQ(warnings["a"][0],
            "CPUs 6-7 overlap worker b on host h1: their ranks compete for cores (start each "
            "worker with its own --cpus)");
  ASSERT_EQ(warnings["b"].size(), 1u);
  EXPECT_EQ(warnings["b"][0].rfind("CPUs 6-7 overlap worker a on host h1", 0), 0u);
  EXPECT_EQ(warnings.count("c"), 0u) << "disjoint on the same host";
  EXPECT_EQ(warnings.count("d"), 0u) << "another host";
}

TEST(CpuOverlapTest, DisconnectedAndUnboundWorkersAreLeftOut) {
  auto warnings = CpuOverlapWarnings(
      {Worker("a", "h", {"0-3"}), Worker("b", "h", {"0-3"}, false), Worker("c", "h", {})});
  EXPECT_TRUE(warnings.empty());
  warnings = CpuOverlapWarnings(
      {Worker("a", "h", {"0-3"}), Worker("b", "h", {"3"}), Worker("c", "h", {"2"})});
  EXPECT_EQ(warnings["a"].size(), 2u);  // one line per overlapping peer
  EXPECT_EQ(warnings["b"].size(), 1u);
  EXPECT_EQ(warnings["c"].size(), 1u);
}

TEST(CpuOverlapTest, RegistrationCpuSetsAreOnePerSlotAndValid) {
  tern::v1::RegisterRequest req;
  req.set_name("w");
  req.set_slots(2);
  EXPECT_TRUE(CheckCpuSets(req).ok()) << "no sets: the worker does not bind";
  req.add_cpu_sets("0-1");
  EXPECT_EQ(CheckCpuSets(req).message(), "worker w: 1 CPU sets for 2 slots (want one per slot)");
  req.add_cpu_sets("2-x");
  EXPECT_EQ(CheckCpuSets(req).message(),
            "worker w: CPU set of slot 1: cpulist \"2-x\": \"x\" is not a CPU number");
  req.set_cpu_sets(1, "2-3");
  EXPECT_TRUE(CheckCpuSets(req).ok());
}

}  // namespace
}  // namespace tern::daemon
