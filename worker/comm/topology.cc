#include "worker/comm/topology.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tern::comm {

absl::Status Topology::Validate(const TopologyConfig& c) {
  std::vector<std::string> errors;
  const bool world_ok = c.world_size >= 1;
  if (!world_ok) errors.push_back(absl::StrCat("world size (", c.world_size, ") must be >= 1"));
  if (world_ok && (c.rank < 0 || c.rank >= c.world_size)) {
    errors.push_back(absl::StrCat("rank (", c.rank, ") is not in [0, ", c.world_size, ")"));
  }
  if (c.nodes < 1) errors.push_back(absl::StrCat("nodes (", c.nodes, ") must be >= 1"));
  if (c.ranks_per_node < 1) {
    errors.push_back(absl::StrCat("ranks_per_node (", c.ranks_per_node, ") must be >= 1"));
  }
  if (world_ok && c.nodes >= 1 && c.ranks_per_node >= 1 &&
      static_cast<int64_t>(c.nodes) * c.ranks_per_node != c.world_size) {
    errors.push_back(absl::StrCat("nodes (", c.nodes, ") x ranks_per_node (", c.ranks_per_node,
                                  ") = ", static_cast<int64_t>(c.nodes) * c.ranks_per_node,
                                  " != world size ", c.world_size));
  }
  const bool sp_ok = c.sequence_parallel >= 1;
  if (!sp_ok) {
    errors.push_back(absl::StrCat("sequence_parallel (", c.sequence_parallel, ") must be >= 1"));
  } else if (world_ok && c.world_size % c.sequence_parallel != 0) {
    errors.push_back(absl::StrCat("sequence_parallel (", c.sequence_parallel,
                                  ") does not divide world size ", c.world_size));
  }
  if (c.data_parallel < 0) {
    errors.push_back(
        absl::StrCat("data_parallel (", c.data_parallel, ") must be >= 1 (or 0 to derive it)"));
  } else if (c.data_parallel > 0 && sp_ok && world_ok &&
             static_cast<int64_t>(c.data_parallel) * c.sequence_parallel != c.world_size) {
    errors.push_back(absl::StrCat(
        "data_parallel (", c.data_parallel, ") x sequence_parallel (", c.sequence_parallel,
        ") = ", static_cast<int64_t>(c.data_parallel) * c.sequence_parallel, " != world size ",
        c.world_size));
  }
  if (errors.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("invalid parallel layout: ", absl::StrJoin(errors, "; "),
                   " --> hint: world size = nodes x ranks_per_node = data_parallel x "
                   "sequence_parallel"));
}

absl::StatusOr<Topology> Topology::Create(const TopologyConfig& config) {
  absl::Status st = Validate(config);
  if (!st.ok()) return st;
  TopologyConfig resolved = config;
  if (resolved.data_parallel == 0) {
    resolved.data_parallel = resolved.world_size / resolved.sequence_parallel;
  }
  return Topology(resolved);
}

std::vector<int> Topology::world_group() const {
  std::vector<int> out(static_cast<size_t>(world_size()));
  for (int i = 0; i < world_size(); ++i) out[static_cast<size_t>(i)] = i;
  return out;
}

std::vector<int> Topology::data_parallel_group() const {
  std::vector<int> out;
  for (int d = 0; d < data_parallel(); ++d) out.push_back(d * sequence_parallel() + sp_rank());
  return out;
}

std::vector<int> Topology::sequence_parallel_group() const {
  std::vector<int> out;
  for (int s = 0; s < sequence_parallel(); ++s) out.push_back(dp_rank() * sequence_parallel() + s);
  return out;
}

std::vector<int> Topology::intra_node_group() const {
  std::vector<int> out;
  for (int l = 0; l < ranks_per_node(); ++l) out.push_back(node() * ranks_per_node() + l);
  return out;
}

std::vector<int> Topology::inter_node_group() const {
  std::vector<int> out;
  for (int n = 0; n < nodes(); ++n) out.push_back(n * ranks_per_node() + local_rank());
  return out;
}

std::string Topology::ToString() const {
  return absl::StrCat("rank ", rank(), " of ", world_size(), ": node ", node(), " local ",
                      local_rank(), ", dp ", dp_rank(), "/", data_parallel(), ", sp ", sp_rank(),
                      "/", sequence_parallel());
}

}  // namespace tern::comm
