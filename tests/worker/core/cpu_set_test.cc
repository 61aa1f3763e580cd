// cpulists, topology reading (a synthetic /sys) and the split of CPUs into slot sets.
#include "worker/core/cpu_set.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace tern::cpu {
namespace {

std::vector<std::string> Lists(const SlotCpus& s) {
  std::vector<std::string> out;
  for (const auto& set : s.sets) out.push_back(FormatCpuList(set));
  return out;
}

// 2 NUMA nodes x 4 cores x 2 SMT threads, numbered like Linux does on x86: CPU c and c+8 are
// siblings; node 0 holds cores 0-3 (CPUs 0-3, 8-11), node 1 cores 4-7 (CPUs 4-7, 12-15).
CpuTopology TwoNodesSmt() {
  CpuTopology t;
  for (int c = 0; c < 16; ++c) {
    const int core = c % 8;
    t.cpus.push_back({.cpu = c, .core = core, .package = core / 4, .node = core / 4});
  }
  return t;
}

CpuList Range(int lo, int hi) {
  CpuList v;
  for (int c = lo; c <= hi; ++c) v.push_back(c);
  return v;
}

TEST(CpuListTest, ParsesAndFormatsLinuxSyntax) {
  EXPECT_EQ(*ParseCpuList("0-3,8,10-11"), (CpuList{0, 1, 2, 3, 8, 10, 11}));
  EXPECT_EQ(*ParseCpuList(" 5\n"), (CpuList{5}));
  EXPECT_EQ(*ParseCpuList("3,1,1-2"), (CpuList{1, 2, 3}));  // sorted, no duplicates
  EXPECT_EQ(FormatCpuList({0, 1, 2, 3, 8, 10, 11}), "0-3,8,10-11");
  EXPECT_EQ(FormatCpuList({}), "");
  EXPECT_EQ(FormatCpuList(*ParseCpuList("0-15,32-47")), "0-15,32-47");
}

TEST(CpuListTest, RefusesMalformedLists) {
  EXPECT_EQ(ParseCpuList("").status().message(), "cpulist is empty");
  EXPECT_EQ(ParseCpuList("0-x").status().message(), "cpulist \"0-x\": \"x\" is not a CPU number");
  EXPECT_EQ(ParseCpuList("5-3").status().message(),
            "cpulist \"5-3\": range \"5-3\" ends before it starts");
  EXPECT_EQ(ParseCpuList("1,,2").status().message(), "cpulist \"1,,2\": empty entry");
  EXPECT_EQ(ParseCpuList("-1").status().message(), "cpulist \"-1\": \"\" is not a CPU number");
  EXPECT_EQ(ParseCpuList("4096").status().message(),
            "cpulist \"4096\": CPU 4096 is beyond the largest supported, 1023");
}

TEST(CpuListTest, SetOperations) {
  EXPECT_TRUE(Overlaps({0, 1, 2}, {2, 3}));
  EXPECT_FALSE(Overlaps({0, 1}, {2, 3}));
  EXPECT_EQ(Intersection({0, 1, 2, 5}, {1, 5, 7}), (CpuList{1, 5}));
  EXPECT_EQ(Difference({0, 1, 2, 5}, {1, 5, 7}), (CpuList{0, 2}));
}

TEST(ResolveCpusTest, DefaultsToTheAllowedMaskAndRefusesCpusOutsideIt) {
  const CpuList allowed = Range(0, 7);
  EXPECT_EQ(*ResolveCpus("--cpus", "", allowed), allowed);
  EXPECT_EQ(*ResolveCpus("--cpus", "2-3", allowed), (CpuList{2, 3}));
  auto bad = ResolveCpus("--cpus", "4-11", allowed);
  EXPECT_TRUE(absl::IsInvalidArgument(bad.status()));
  EXPECT_EQ(bad.status().message(),
            "--cpus 4-11: CPU(s) 8-11 are not in this process's allowed CPUs (0-7)");
  EXPECT_EQ(ResolveCpus("--cpus", "a", allowed).status().message(),
            "--cpus: cpulist \"a\": \"a\" is not a CPU number");
}

TEST(SplitCpusTest, TwoNodesSmtKeepsNodesAndSiblingsTogether) {
  const CpuTopology t = TwoNodesSmt();
  const CpuList all = Range(0, 15);
  EXPECT_EQ(Lists(*SplitCpus(t, all, 1)), (std::vector<std::string>{"0-15"}));
  EXPECT_EQ(Lists(*SplitCpus(t, all, 2)), (std::vector<std::string>{"0-3,8-11", "4-7,12-15"}));
  EXPECT_EQ(Lists(*SplitCpus(t, all, 4)),
            (std::vector<std::string>{"0-1,8-9", "2-3,10-11", "4-5,12-13", "6-7,14-15"}));
  EXPECT_EQ(
      Lists(*SplitCpus(t, all, 8)),
      (std::vector<std::string>{"0,8", "1,9", "2,10", "3,11", "4,12", "5,13", "6,14", "7,15"}));
  // Uneven: node 0 gets the extra slot; no slot spans both nodes.
  EXPECT_EQ(Lists(*SplitCpus(t, all, 3)),
            (std::vector<std::string>{"0-1,8-9", "2-3,10-11", "4-7,12-15"}));
  // More slots than cores: siblings are split, still one CPU each, still within a node.
  auto sixteen = *SplitCpus(t, all, 16);
  EXPECT_FALSE(sixteen.shared);
  EXPECT_EQ(Lists(sixteen)[0], "0");
  EXPECT_EQ(Lists(sixteen)[1], "8");
  EXPECT_EQ(Lists(sixteen)[8], "4");
}

TEST(SplitCpusTest, SetsAreDisjointAndCoverTheCpus) {
  const CpuTopology t = TwoNodesSmt();
  for (const char* list : {"0-15", "0-3,8-11", "2-13", "0,4,8,12", "1-6"}) {
    const CpuList cpus = *ParseCpuList(list);
    for (int slots = 1; slots <= static_cast<int>(cpus.size()); ++slots) {
      auto s = SplitCpus(t, cpus, slots);
      ASSERT_TRUE(s.ok()) << list << " / " << slots;
      ASSERT_EQ(s->sets.size(), size_t(slots));
      EXPECT_FALSE(s->shared);
      CpuList seen;
      for (const auto& set : s->sets) {
        EXPECT_FALSE(set.empty()) << list << " / " << slots;
        EXPECT_FALSE(Overlaps(seen, set)) << list << " / " << slots;
        seen.insert(seen.end(), set.begin(), set.end());
        std::sort(seen.begin(), seen.end());
      }
      EXPECT_EQ(seen, cpus) << list << " / " << slots;
    }
  }
}

TEST(SplitCpusTest, AWorkerGivenOneNodeSplitsItByCores) {
  // --cpus 4-7,12-15: node 1 only.
  EXPECT_EQ(Lists(*SplitCpus(TwoNodesSmt(), *ParseCpuList("4-7,12-15"), 2)),
            (std::vector<std::string>{"4-5,12-13", "6-7,14-15"}));
}

TEST(SplitCpusTest, FlatTopologyAndUnknownCpus) {
  // No sysfs information: every CPU its own core on node 0.
  EXPECT_EQ(Lists(*SplitCpus({}, {0, 1}, 2)), (std::vector<std::string>{"0", "1"}));
  EXPECT_EQ(Lists(*SplitCpus({}, Range(0, 5), 4)),
            (std::vector<std::string>{"0", "1-2", "3", "4-5"}));
}

TEST(SplitCpusTest, MoreSlotsThanCpusShareOneCpuEach) {
  auto s = *SplitCpus({}, {2, 3}, 5);
  EXPECT_TRUE(s.shared);
  EXPECT_EQ(Lists(s), (std::vector<std::string>{"2", "3", "2", "3", "2"}));
}

TEST(SplitCpusTest, RefusesNoSlotsOrNoCpus) {
  EXPECT_EQ(SplitCpus({}, {0}, 0).status().message(), "cannot split CPUs into 0 slots");
  EXPECT_EQ(SplitCpus({}, {}, 1).status().message(), "no CPUs to place ranks on");
}

TEST(ReadCpuTopologyTest, ReadsSiblingsPackagesAndNodesFromSysfs) {
  char tmpl[] = "/tmp/tern-sysfs-XXXXXX";
  const std::string root = ::mkdtemp(tmpl);
  namespace fs = std::filesystem;
  // 4 CPUs: cores {0,2} and {1,3}; node 0 = 0,2; node 1 = 1,3; cpu3 lacks its package file.
  for (int c = 0; c < 4; ++c) {
    const fs::path d = fs::path(root) / "devices/system/cpu" / ("cpu" + std::to_string(c));
    fs::create_directories(d / "topology");
    std::ofstream(d / "topology/thread_siblings_list") << (c % 2 == 0 ? "0,2\n" : "1,3\n");
    if (c != 3) std::ofstream(d / "topology/physical_package_id") << c % 2 << "\n";
  }
  fs::create_directories(fs::path(root) / "devices/system/cpu/cpufreq");  // not a CPU
  for (int n = 0; n < 2; ++n) {
    const fs::path d = fs::path(root) / "devices/system/node" / ("node" + std::to_string(n));
    fs::create_directories(d);
    std::ofstream(d / "cpulist") << (n == 0 ? "0,2\n" : "1,3\n");
  }
  const CpuTopology t = ReadCpuTopology(root);
  ASSERT_EQ(t.cpus.size(), 4u);
  EXPECT_EQ(t.Find(2)->core, 0);
  EXPECT_EQ(t.Find(3)->core, 1);
  EXPECT_EQ(t.Find(1)->package, 1);
  EXPECT_EQ(t.Find(3)->package, 0);  // missing file: package 0
  EXPECT_EQ(t.Find(1)->node, 1);
  EXPECT_EQ(t.Find(2)->node, 0);
  EXPECT_EQ(Lists(*SplitCpus(t, Range(0, 3), 2)), (std::vector<std::string>{"0,2", "1,3"}));
  // A root without sysfs: empty topology, the split still works.
  EXPECT_TRUE(ReadCpuTopology(root + "/nothing").cpus.empty());
  fs::remove_all(root);
}

TEST(AffinityTest, SetAffinityIsReadBackFromProc) {
  auto mine = ThisProcessAffinity();
  ASSERT_TRUE(mine.ok()) << mine.status();
  ASSERT_FALSE(mine->empty());
  EXPECT_EQ(*ProcessAffinityFromProc(::getpid()), *mine);
  // A child binds itself to the last allowed CPU; the parent reads its mask from /proc.
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const char ok = SetAffinity(0, {mine->back()}).ok() ? 'y' : 'n';
    (void)!::write(ready[1], &ok, 1);
    ::pause();
    ::_exit(0);
  }
  char ok = 0;
  ASSERT_EQ(::read(ready[0], &ok, 1), 1);
  auto child = ProcessAffinityFromProc(pid);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  if (ok != 'y') GTEST_SKIP() << "sched_setaffinity is denied here";
  ASSERT_TRUE(child.ok()) << child.status();
  EXPECT_EQ(*child, CpuList{mine->back()});
  EXPECT_EQ(SetAffinity(0, {}).message(), "cannot bind to an empty CPU set");
}

}  // namespace
}  // namespace tern::cpu
