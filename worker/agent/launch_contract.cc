#include "worker/agent/launch_contract.h"

#include <google/protobuf/util/json_util.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace tern::agent {

std::string JobDir(const LaunchContext& ctx, const std::string& job_id) {
  return absl::StrCat(ctx.scratch, "/", job_id);
}

std::string SpecPath(const LaunchContext& ctx, const std::string& job_id) {
  return absl::StrCat(JobDir(ctx, job_id), "/spec.json");
}

std::string RankLogPath(const LaunchContext& ctx, const std::string& job_id, int rank) {
  return absl::StrCat(JobDir(ctx, job_id), "/rank-", rank, ".log");
}

int RankThreads(const LaunchContext& ctx, const tern::v1::Assignment& a, const cpu::CpuList& cpus) {
  const auto& res = a.spec().resources();
  if (res.has_threads_per_rank()) return std::max(1, res.threads_per_rank());
  return std::max(1, cpus.empty() ? ctx.threads_per_slot : static_cast<int>(cpus.size()));
}

std::vector<std::string> BuildRankArgv(const LaunchContext& ctx, const tern::v1::Assignment& a,
                                       int rank, const cpu::CpuList& cpus) {
  std::vector<std::string> argv = {
      ctx.rank_binary,
      "rank",
      "--spec-file",
      SpecPath(ctx, a.job_id()),
      "--rank",
      absl::StrCat(rank),
      "--world-size",
      absl::StrCat(a.world_size()),
      "--ranks-per-node",
      absl::StrCat(a.ranks_per_node()),
      "--rendezvous",
      ctx.coordinator,
      "--rendezvous-prefix",
      a.rendezvous_prefix(),
      "--threads",
      absl::StrCat(RankThreads(ctx, a, cpus)),
      "--json",
      "--control-stdin",
  };
  if (!cpus.empty()) {
    argv.push_back("--cpus");
    argv.push_back(cpu::FormatCpuList(cpus));
  }
  if (!ctx.token_file.empty()) {
    argv.push_back("--token-file");
    argv.push_back(ctx.token_file);
  }
  if (a.resume()) argv.push_back("--resume-if-any");
  if (!ctx.bind_address.empty()) {
    argv.push_back("--bind-address");
    argv.push_back(ctx.bind_address);
  }
  return argv;
}

absl::Status WriteSpecFile(const std::string& path, const tern::v1::JobSpec& spec) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  opts.add_whitespace = true;
  std::string json;
  auto st = google::protobuf::util::MessageToJsonString(spec, &json, opts);
  if (!st.ok()) {
    return absl::InternalError(absl::StrCat("cannot print job spec as JSON: ", st.ToString()));
  }
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << json << "\n";
    if (!out) return absl::UnavailableError(absl::StrCat("cannot write spec file ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

}  // namespace tern::agent
