#include "worker/comm/groups.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "worker/comm/local_communicator.h"
#include "worker/core/status.h"

namespace tern::comm {

absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(Store& store,
                                                                 const std::string& prefix,
                                                                 int rank, int size,
                                                                 const GlooOptions& options) {
  if (size == 1 && rank == 0) {
    return std::unique_ptr<Communicator>(new LocalCommunicator(options.kind, options.name));
  }
  TERN_ASSIGN_OR_RETURN(auto gloo, GlooCommunicator::Create(store, prefix, rank, size, options));
  return std::unique_ptr<Communicator>(std::move(gloo));
}

std::vector<Communicator*> CommGroups::all() const {
  std::vector<Communicator*> out;
  for (const auto* c : {&world, &data_parallel, &sequence_parallel, &intra_node, &inter_node}) {
    if (*c) out.push_back(c->get());
  }
  return out;
}

std::map<std::string, CommStats> CommGroups::TakeStatsByKind() {
  std::map<std::string, CommStats> out;
  for (Communicator* c : all()) out[c->kind()] += c->TakeStats();
  return out;
}

namespace {

absl::StatusOr<std::unique_ptr<Communicator>> CreateGroup(Store& store, const std::string& prefix,
                                                          const std::string& kind, int instance,
                                                          const std::vector<int>& members,
                                                          int my_rank, int ranks_per_node,
                                                          GlooOptions options) {
  const auto it = std::find(members.begin(), members.end(), my_rank);
  TERN_CHECK(it != members.end()) << "rank " << my_rank << " missing from its " << kind << " group";
  options.kind = kind;
  options.name = absl::StrCat(kind, "#", instance);
  TERN_ASSIGN_OR_RETURN(auto comm,
                        CreateCommunicator(store, absl::StrCat(prefix, "/", kind, "/", instance),
                                           static_cast<int>(it - members.begin()),
                                           static_cast<int>(members.size()), options));
  // Ranks fill nodes in order: the node of global rank g is g / ranks_per_node.
  std::vector<int> nodes;
  for (int g : members) nodes.push_back(g / ranks_per_node);
  comm->SetPeerNodes(std::move(nodes));
  return comm;
}

}  // namespace

absl::StatusOr<CommGroups> CreateCommGroups(Store& store, const std::string& prefix,
                                            const Topology& t, const GlooOptions& options) {
  CommGroups g;
  const int r = t.rank();
  const int rpn = t.ranks_per_node();
  TERN_ASSIGN_OR_RETURN(
      g.world, CreateGroup(store, prefix, kKindWorld, 0, t.world_group(), r, rpn, options));
  TERN_ASSIGN_OR_RETURN(g.data_parallel, CreateGroup(store, prefix, kKindDataParallel, t.sp_rank(),
                                                     t.data_parallel_group(), r, rpn, options));
  TERN_ASSIGN_OR_RETURN(g.sequence_parallel,
                        CreateGroup(store, prefix, kKindSequenceParallel, t.dp_rank(),
                                    t.sequence_parallel_group(), r, rpn, options));
  TERN_ASSIGN_OR_RETURN(g.intra_node, CreateGroup(store, prefix, kKindIntraNode, t.node(),
                                                  t.intra_node_group(), r, rpn, options));
  TERN_ASSIGN_OR_RETURN(g.inter_node, CreateGroup(store, prefix, kKindInterNode, t.local_rank(),
                                                  t.inter_node_group(), r, rpn, options));
  return g;
}

}  // namespace tern::comm
