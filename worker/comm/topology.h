// Topology: this rank's place in the job and the member lists of its communication groups.
//
// Layout (rank = global rank):
//   node = rank / ranks_per_node, local_rank = rank % ranks_per_node (ranks fill nodes in order)
//   sequence-parallel groups are runs of `sequence_parallel` consecutive ranks
//     (sp_rank = rank % sp, so an SP group stays inside a node when sp divides ranks_per_node);
//   data-parallel groups are the ranks with the same sp_rank (dp_rank = rank / sp);
//   intra-node group: every rank on my node; inter-node group: my local rank on every node.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tern::comm {

struct TopologyConfig {
  int world_size = 1;
  int rank = 0;
  int nodes = 1;
  int ranks_per_node = 1;
  // 0 = derive as world_size / sequence_parallel.
  int data_parallel = 0;
  int sequence_parallel = 1;
};

class Topology {
 public:
  // Checks every degree against the world size before anything is allocated. Returns
  // INVALID_ARGUMENT listing EVERY offending value, e.g. "nodes (2) x ranks_per_node (3) = 6 !=
  // world size 4; sequence_parallel (3) does not divide world size 4".
  static absl::Status Validate(const TopologyConfig& config);
  static absl::StatusOr<Topology> Create(const TopologyConfig& config);

  int world_size() const { return config_.world_size; }
  int rank() const { return config_.rank; }
  int nodes() const { return config_.nodes; }
  int ranks_per_node() const { return config_.ranks_per_node; }
  int node() const { return rank() / ranks_per_node(); }
  int local_rank() const { return rank() % ranks_per_node(); }
  int data_parallel() const { return config_.data_parallel; }
  int sequence_parallel() const { return config_.sequence_parallel; }
  int dp_rank() const { return rank() / sequence_parallel(); }
  int sp_rank() const { return rank() % sequence_parallel(); }

  // Global ranks, ascending; my index in each list is my rank in that group.
  std::vector<int> world_group() const;
  std::vector<int> data_parallel_group() const;
  std::vector<int> sequence_parallel_group() const;
  std::vector<int> intra_node_group() const;
  std::vector<int> inter_node_group() const;

  // "rank 3 of 4: node 1 local 1, dp 3/4, sp 0/1".
  std::string ToString() const;

 private:
  explicit Topology(const TopologyConfig& config) : config_(config) {}
  TopologyConfig config_;
};

}  // namespace tern::comm
