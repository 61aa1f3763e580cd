#include "worker/agent/launch_contract.h"

#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace tern::agent {
namespace {

TEST(LaunchContract, BuildsTheDocumentedCommandLine) {
  LaunchContext ctx{
      "/opt/tern/bin/tern", "10.0.0.1:7070", "/scratch", "/etc/tern/worker.token", 4, ""};
  tern::v1::Assignment a;
  a.set_job_id("j-000042");
  a.set_round(3);
  a.set_world_size(8);
  a.set_ranks_per_node(2);
  a.set_rendezvous_prefix("j-000042/3");
  const std::vector<std::string> expect = {"/opt/tern/bin/tern",
                                           "rank",
                                           "--spec-file",
                                           "/scratch/j-000042/spec.json",
                                           "--rank",
                                           "5",
                                           "--world-size",
                                           "8",
                                           "--ranks-per-node",
                                           "2",
                                           "--rendezvous",
                                           "10.0.0.1:7070",
                                           "--rendezvous-prefix",
                                           "j-000042/3",
                                           "--threads",
                                           "4",
                                           "--json",
                                           "--control-stdin",
                                           "--token-file",
                                           "/etc/tern/worker.token"};
  EXPECT_EQ(BuildRankArgv(ctx, a, 5), expect);
  a.mutable_spec()->mutable_resources()->set_threads_per_rank(7);
  ctx.token_file.clear();
  auto argv = BuildRankArgv(ctx, a, 0);
  EXPECT_EQ(argv.back(), "--control-stdin");
  EXPECT_EQ(argv[argv.size() - 3], "7");
  EXPECT_EQ(RankLogPath(ctx, "j-000042", 5), "/scratch/j-000042/rank-5.log");
}

TEST(LaunchContract, ABoundRankGetsItsSetAndThreadsFromTheSetSize) {
  LaunchContext ctx{"/opt/tern/bin/tern", "10.0.0.1:7070", "/scratch", "", 4, ""};
  tern::v1::Assignment a;
  a.set_job_id("j-1");
  a.set_world_size(2);
  a.set_ranks_per_node(2);
  a.set_rendezvous_prefix("j-1/1");
  const cpu::CpuList set = {4, 5, 12, 13};
  auto argv = BuildRankArgv(ctx, a, 1, set);
  ASSERT_GE(argv.size(), 4u);
  EXPECT_EQ(argv[argv.size() - 2], "--cpus");
  EXPECT_EQ(argv.back(), "4-5,12-13");
  EXPECT_EQ(RankThreads(ctx, a, set), 4);
  EXPECT_EQ(RankThreads(ctx, a, {7}), 1);
  EXPECT_EQ(RankThreads(ctx, a, {}), 4) << "unbound: cores / slots";
  a.mutable_spec()->mutable_resources()->set_threads_per_rank(2);
  EXPECT_EQ(RankThreads(ctx, a, set), 2) << "the spec's threads_per_rank wins";
  // More than the set: passed on, and `tern rank --cpus` refuses it.
  a.mutable_spec()->mutable_resources()->set_threads_per_rank(8);
  argv = BuildRankArgv(ctx, a, 1, set);
  EXPECT_NE(std::find(argv.begin(), argv.end(), "8"), argv.end());
}

TEST(LaunchContract, SpecFileIsProtoJsonWithFieldNames) {
  char tmpl[] = "/tmp/tern-spec-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  tern::v1::JobSpec spec;
  spec.set_name("n");
  spec.set_train_micro_batch_size_per_gpu(3);
  spec.mutable_zero_optimization()->set_stage(2);
  const std::string path = dir + "/j/spec.json";
  ASSERT_TRUE(WriteSpecFile(path, spec).ok());
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_NE(ss.str().find("\"train_micro_batch_size_per_gpu\": 3"), std::string::npos) << ss.str();
  tern::v1::JobSpec back;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(ss.str(), &back).ok());
  EXPECT_EQ(back.zero_optimization().stage(), 2);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tern::agent
