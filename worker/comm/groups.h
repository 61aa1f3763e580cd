// Communicator factory: one communicator per group of a Topology, each with its own store prefix
// and (for more than one rank) its own Gloo context, connections and communication thread.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/comm/comm.h"
#include "worker/comm/gloo_communicator.h"
#include "worker/comm/store.h"
#include "worker/comm/topology.h"

namespace tern::comm {

inline constexpr char kKindWorld[] = "world";
inline constexpr char kKindDataParallel[] = "data_parallel";
inline constexpr char kKindSequenceParallel[] = "sequence_parallel";
inline constexpr char kKindIntraNode[] = "intra_node";
inline constexpr char kKindInterNode[] = "inter_node";

// A LocalCommunicator when size == 1 (no store traffic), else a GlooCommunicator rendezvousing
// under `prefix` (options.kind / options.name label it).
absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(Store& store,
                                                                 const std::string& prefix,
                                                                 int rank, int size,
                                                                 const GlooOptions& options);

struct CommGroups {
  std::unique_ptr<Communicator> world;
  std::unique_ptr<Communicator> data_parallel;
  std::unique_ptr<Communicator> sequence_parallel;
  std::unique_ptr<Communicator> intra_node;
  std::unique_ptr<Communicator> inter_node;

  std::vector<Communicator*> all() const;
  // Per-step byte accounting: stats of every group summed by kind(), counters reset.
  std::map<std::string, CommStats> TakeStatsByKind();
};

// Creates the five groups of `topology` in a fixed order (world, data_parallel,
// sequence_parallel, intra_node, inter_node), so every rank must call it. Group instance g of
// kind k rendezvouses under "<prefix>/<k>/<g>" and is named "<k>#<g>". `options` supplies the
// timeout, hostname and algorithms; kind and name are set per group. Fails with the first
// group's error (each names its group).
absl::StatusOr<CommGroups> CreateCommGroups(Store& store, const std::string& prefix,
                                            const Topology& topology, const GlooOptions& options);

}  // namespace tern::comm
