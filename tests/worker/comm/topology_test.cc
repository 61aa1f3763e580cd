// Topology groups and validation; the group factory on 4 ranks as 2 nodes x 2.
#include "worker/comm/topology.h"

#include "gmock/gmock.h"
#include "tests/worker/comm/rank_threads.h"
#include "worker/comm/byte_accounting.h"

namespace tern::comm {
namespace {

using ::testing::ElementsAre;
using testing::RunRanks;

TopologyConfig TwoByTwo(int rank) {
  TopologyConfig c;
  c.world_size = 4;
  c.rank = rank;
  c.nodes = 2;
  c.ranks_per_node = 2;
  return c;
}

TEST(TopologyTest, FourRanksAsTwoNodesOfTwo) {
  auto t3 = Topology::Create(TwoByTwo(3));
  ASSERT_TRUE(t3.ok()) << t3.status();
  EXPECT_EQ(t3->node(), 1);
  EXPECT_EQ(t3->local_rank(), 1);
  EXPECT_EQ(t3->data_parallel(), 4);
  EXPECT_THAT(t3->world_group(), ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(t3->data_parallel_group(), ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(t3->sequence_parallel_group(), ElementsAre(3));
  EXPECT_THAT(t3->intra_node_group(), ElementsAre(2, 3));
  EXPECT_THAT(t3->inter_node_group(), ElementsAre(1, 3));
  auto t0 = Topology::Create(TwoByTwo(0));
  ASSERT_TRUE(t0.ok());
  EXPECT_EQ(t0->node(), 0);
  EXPECT_THAT(t0->intra_node_group(), ElementsAre(0, 1));
  EXPECT_THAT(t0->inter_node_group(), ElementsAre(0, 2));
}

TEST(TopologyTest, SequenceParallelGroupsAreConsecutiveRanks) {
  TopologyConfig c = TwoByTwo(3);
  c.sequence_parallel = 2;
  auto t = Topology::Create(c);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->data_parallel(), 2);
  EXPECT_EQ(t->dp_rank(), 1);
  EXPECT_EQ(t->sp_rank(), 1);
  EXPECT_THAT(t->sequence_parallel_group(), ElementsAre(2, 3));
  EXPECT_THAT(t->data_parallel_group(), ElementsAre(1, 3));
}

TEST(TopologyTest, ValidationListsEveryOffender) {
  TopologyConfig c;
  c.world_size = 4;
  c.rank = 7;
  c.nodes = 2;
  c.ranks_per_node = 3;
  c.sequence_parallel = 3;
  c.data_parallel = 3;
  absl::Status st = Topology::Validate(c);
  ASSERT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(st.message());
  EXPECT_NE(msg.find("nodes (2) x ranks_per_node (3) = 6 != world size 4"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("sequence_parallel (3) does not divide world size 4"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("rank (7) is not in [0, 4)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("data_parallel (3) x sequence_parallel (3) = 9 != world size 4"),
            std::string::npos)
      << msg;
  EXPECT_EQ(Topology::Create(c).status(), st);

  TopologyConfig zeros;
  zeros.world_size = 0;
  zeros.nodes = 0;
  zeros.ranks_per_node = 0;
  zeros.sequence_parallel = 0;
  const std::string z(Topology::Validate(zeros).message());
  for (const char* what :
       {"world size (0)", "nodes (0)", "ranks_per_node (0)", "sequence_parallel (0)"}) {
    EXPECT_NE(z.find(what), std::string::npos) << what << " missing from: " << z;
  }
  EXPECT_TRUE(Topology::Validate(TwoByTwo(1)).ok());
}

TEST(CommGroupsTest, FactoryBuildsEveryGroupAndCountsBytesByKind) {
  InMemoryStore store;
  GlooOptions options;
  options.timeout = std::chrono::seconds(10);
  const CollectiveOptions opts{std::chrono::seconds(10)};
  RunRanks(4, [&](int r) {
    auto topology = Topology::Create(TwoByTwo(r));
    ASSERT_TRUE(topology.ok());
    auto groups = CreateCommGroups(store, "job1/round0", *topology, options);
    ASSERT_TRUE(groups.ok()) << groups.status();
    EXPECT_EQ(groups->world->size(), 4);
    EXPECT_EQ(groups->world->rank(), r);
    EXPECT_EQ(groups->sequence_parallel->size(), 1);  // sp = 1: a local communicator
    EXPECT_EQ(groups->intra_node->size(), 2);
    EXPECT_EQ(groups->intra_node->rank(), r % 2);
    EXPECT_EQ(groups->inter_node->rank(), r / 2);
    EXPECT_EQ(groups->inter_node->kind(), "inter_node");
    EXPECT_EQ(groups->intra_node->name(), "intra_node#" + std::to_string(r / 2));

    // Intra-node sum, then inter-node sum = world sum (the hierarchical all-reduce pattern).
    std::vector<float> data(1024, float(r + 1));
    ASSERT_TRUE(groups->intra_node->AllReduce(data, opts).ok());
    EXPECT_EQ(data[0], r < 2 ? 3.0f : 7.0f);
    ASSERT_TRUE(groups->inter_node->AllReduce(data, opts).ok());
    EXPECT_EQ(data[5], 10.0f);
    std::vector<float> world(1024, float(r + 1));
    ASSERT_TRUE(groups->world->AllReduce(world, opts).ok());
    EXPECT_EQ(world, data);

    auto by_kind = groups->TakeStatsByKind();
    EXPECT_EQ(by_kind["intra_node"].total_bytes(), AllReduceRingBytesSent(2, r % 2, 4096, 4));
    EXPECT_EQ(by_kind["inter_node"].total_bytes(), AllReduceRingBytesSent(2, r / 2, 4096, 4));
    EXPECT_EQ(by_kind["world"].total_bytes(), AllReduceRingBytesSent(4, r, 4096, 4));
    EXPECT_EQ(by_kind["data_parallel"].total_calls(), 0u);
    // Bytes by peer: intra-node never crosses, inter-node always does; the world ring sends
    // everything to rank+1, which is on another node for ranks 1 and 3 only.
    EXPECT_EQ(by_kind["intra_node"].cross_node_bytes, 0u);
    EXPECT_EQ(by_kind["inter_node"].cross_node_bytes, by_kind["inter_node"].total_bytes());
    EXPECT_EQ(by_kind["world"].cross_node_bytes, r % 2 == 1 ? by_kind["world"].total_bytes() : 0u);
    // An all-to-all sends one chunk to each peer: two of the three are on the other node.
    std::vector<float> a2a_in(4 * 64, 1.0f), a2a_out(4 * 64);
    ASSERT_TRUE(groups->world
                    ->AllToAll(std::as_bytes(std::span<const float>(a2a_in)),
                               std::as_writable_bytes(std::span<float>(a2a_out)), opts)
                    .ok());
    const CommStats a2a = groups->world->TakeStats();
    EXPECT_EQ(a2a.total_bytes(), 3u * 64 * 4);
    EXPECT_EQ(a2a.cross_node_bytes, 2u * 64 * 4);
    // A broadcast from rank 0: its children in the binomial tree are 1 and 2 (2 on node 1).
    std::vector<float> b(16, float(r));
    ASSERT_TRUE(
        groups->world->Broadcast(std::as_writable_bytes(std::span<float>(b)), 0, opts).ok());
    const CommStats bc = groups->world->TakeStats();
    if (r == 0) {
      EXPECT_EQ(bc.cross_node_bytes, 16u * 4);
    }
    by_kind = groups->TakeStatsByKind();
    EXPECT_EQ(by_kind["world"].total_bytes(), 0u);  // reset per step
    // Every rank finishes its collectives before any group is torn down.
    ASSERT_TRUE(groups->world->Barrier(opts).ok());
  });
}

TEST(CommGroupsTest, InvalidTopologyIsRejectedBeforeAnyRendezvous) {
  TopologyConfig c = TwoByTwo(0);
  c.ranks_per_node = 3;
  EXPECT_EQ(Topology::Create(c).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tern::comm
