#include "worker/engine/checkpointing.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/fs_util.h"
#include "worker/checkpoint/manifest.h"
#include "worker/core/param_match.h"
#include "worker/core/status.h"
#include "worker/data/data_loader.h"
#include "worker/spec/spec.h"

namespace tern::engine {
namespace {

using Clock = std::chrono::steady_clock;
double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// JSON text that never throws (invalid UTF-8 is replaced).
std::string Dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

// The parameter table of the checkpoint must be this model's: every missing, extra and
// mis-shaped tensor is listed; the same tensors in another order are refused too (the state is
// read by flat offset).
absl::Status CheckSameModel(const ckpt::Checkpoint& ck, const ParamTable& table) {
  const std::string hint =
      " --> hint: resume with the model config of the run that saved the checkpoint";
  TERN_RETURN_IF_ERROR(
      MatchTensors(table, ShapesOf(ck.params()), absl::StrCat("checkpoint ", ck.dir()), hint));
  const auto& saved = ck.params().entries();
  const auto& ours = table.entries();
  for (size_t i = 0; i < ours.size(); ++i) {
    if (saved[i].name != ours[i].name) {
      return absl::FailedPreconditionError(
          absl::StrCat("checkpoint ", ck.dir(),
                       " holds this model's parameters in another order: ", "parameter ", i,
                       " is '", saved[i].name, "', this model's is '", ours[i].name, "'", hint));
    }
  }
  return absl::OkStatus();
}

}  // namespace

nlohmann::json StatusToJson(const absl::Status& st) {
  return {{"code", static_cast<int>(st.code())}, {"message", std::string(st.message())}};
}

absl::Status StatusFromJson(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("code")) {
    return absl::InternalError(absl::StrCat("malformed status from a peer: ", j.dump()));
  }
  return absl::Status(static_cast<absl::StatusCode>(j.value("code", 13)),
                      j.value("message", std::string()));
}

std::pair<uint64_t, uint64_t> EvenShare(uint64_t total, int parts, int i) {
  const uint64_t p = static_cast<uint64_t>(parts), k = static_cast<uint64_t>(i);
  const uint64_t base = total / p, extra = total % p;
  const uint64_t begin = k * base + std::min(k, extra);
  return {begin, begin + base + (k < extra ? 1 : 0)};
}

std::vector<ckpt::Segment> SegmentsToSave(const std::vector<zero::StateSegment>& owned,
                                          bool replicated, int rank, int ranks) {
  std::vector<zero::StateSegment> pieces;
  if (!replicated || ranks <= 1) {
    pieces = owned;
  } else {
    // Every rank holds everything: rank r writes elements [begin, end) of the concatenation.
    uint64_t total = 0;
    for (const auto& s : owned) total += s.numel;
    const auto [begin, end] = EvenShare(total, ranks, rank);
    uint64_t pos = 0;
    for (const auto& s : owned) {
      const uint64_t lo = std::max(begin, pos), hi = std::min(end, pos + s.numel);
      if (lo < hi) {
        const uint64_t skip = lo - pos;
        pieces.push_back({s.global_offset + skip, hi - lo, s.master + skip, s.exp_avg + skip,
                          s.exp_avg_sq + skip});
      }
      pos += s.numel;
    }
  }
  struct StateField {
    const char* name;
    float* zero::StateSegment::*data;
  };
  constexpr StateField kStates[] = {{"master", &zero::StateSegment::master},
                                    {"exp_avg", &zero::StateSegment::exp_avg},
                                    {"exp_avg_sq", &zero::StateSegment::exp_avg_sq}};
  std::vector<ckpt::Segment> out;
  for (const StateField& f : kStates) {
    for (const auto& p : pieces) {
      if (p.numel == 0) continue;
      ckpt::Segment seg;
      seg.state = f.name;
      seg.global_offset = p.global_offset;
      seg.numel = p.numel;
      seg.dtype = "f32";
      seg.data = p.*f.data;
      out.push_back(seg);
    }
  }
  return out;
}

Checkpointing::Checkpointing(const tern::spec::JobConfig& cfg, CheckpointingOptions options)
    : cfg_(cfg),
      opts_(std::move(options)),
      result_(absl::FailedPreconditionError("no checkpoint pending")) {}

Checkpointing::~Checkpointing() {
  JoinWaiter();
  if (committer_.joinable()) committer_.join();
}

absl::StatusOr<std::unique_ptr<Checkpointing>> Checkpointing::Create(
    const tern::spec::JobConfig& cfg, CheckpointingOptions options) {
  const spec::CheckpointOptions& c = cfg.checkpoint;
  if (c.dir.empty())
    return absl::InvalidArgumentError("checkpoint.dir: must be set to write checkpoints");
  std::unique_ptr<Checkpointing> ck(new Checkpointing(cfg, std::move(options)));
  ck->root_ = c.dir;
  ck->interval_ = c.interval;
  ck->keep_last_ = c.keep_last;
  ck->async_ = c.async;
  if (c.block_size > 0) ck->io_.block_size = c.block_size;
  if (c.queue_depth > 0) ck->io_.queue_depth = c.queue_depth;
  ckpt::AsyncOptions ao;
  ao.blocking = !ck->async_;
  ao.writer.io = ck->io_;
  if (ck->opts_.checksum_block > 0) ao.writer.checksum_block = ck->opts_.checksum_block;
  ck->writer_ = std::make_unique<ckpt::AsyncCheckpointer>(ao);
  return ck;
}

bool Checkpointing::Due(int64_t steps_done) const {
  return steps_done == cfg_.train_iters || (interval_ > 0 && steps_done % interval_ == 0);
}

absl::Status Checkpointing::Agree(const absl::Status& mine) {
  if (!opts_.gather) return mine;
  TERN_ASSIGN_OR_RETURN(auto all, opts_.gather(Dump(StatusToJson(mine))));
  for (size_t r = 0; r < all.size(); ++r) {
    absl::Status st = StatusFromJson(nlohmann::json::parse(all[r], nullptr, false));
    if (st.ok()) continue;
    if (static_cast<int>(r) == opts_.rank) return st;
    return absl::Status(st.code(), absl::StrCat("rank ", r, ": ", st.message()));
  }
  return absl::OkStatus();
}

// Steps this run would checkpoint must not hold a committed manifest already.
absl::Status Checkpointing::CheckFreeSteps(int64_t first_done) const {
  std::error_code ec;
  if (!std::filesystem::exists(root_, ec)) return absl::OkStatus();
  for (const auto& e : std::filesystem::directory_iterator(root_, ec)) {
    const int64_t step = ckpt::ParseStepDirName(e.path().filename().string());
    if (step <= first_done || step > cfg_.train_iters || !Due(step)) continue;
    if (std::filesystem::exists(e.path() / ckpt::kManifestName, ec)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "checkpoint.dir ", root_, " already holds a committed ", e.path().filename().string(),
          " that this run would write --> hint: resume from it with --resume, or use another "
          "checkpoint.dir"));
    }
  }
  return absl::OkStatus();
}

// Rank 0: cleanup, choice of the checkpoint to load ("" = fresh run), overwrite checks.
absl::StatusOr<std::string> Checkpointing::PrepareOnLeader(bool resume, int64_t* done_hint) {
  std::error_code ec;
  const bool exists = std::filesystem::exists(root_, ec);
  if (exists) TERN_RETURN_IF_ERROR(ckpt::CleanupIncomplete(root_).status());
  std::vector<ckpt::StepInfo> steps;
  if (exists) {
    TERN_ASSIGN_OR_RETURN(steps, ckpt::ListCheckpoints(root_));
  }
  const ckpt::StepInfo* newest = nullptr;
  for (const auto& s : steps)
    if (s.complete) newest = &s;
  std::string name;
  if (!resume) {
    if (newest != nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "checkpoint.dir ", root_, " already holds checkpoints (newest ", newest->name,
          ") --> hint: pass --resume to continue from it, or use another checkpoint.dir"));
    }
  } else {
    name = cfg_.checkpoint.load;
    const bool if_any = name == spec::kLoadLatestIfAny;
    if (name.empty() || name == "latest" || if_any) {
      // A newer step with a manifest was committed but cannot be loaded: loading an older one
      // instead must be asked for (checkpoint.load), never done silently.
      for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
        if (it->complete) break;
        if (std::filesystem::exists(root_ + "/" + it->name + "/" + ckpt::kManifestName, ec)) {
          return absl::DataLossError(absl::StrCat(
              root_, "/", it->name, " was committed but cannot be loaded: ", it->problem, " ",
              ckpt::CompleteHint(root_, it->name)));
        }
      }
      if (newest == nullptr && if_any) return std::string();  // nothing committed yet: fresh
      if (newest == nullptr && !steps.empty()) {
        const auto& last = steps.back();
        return absl::DataLossError(
            absl::StrCat("no complete checkpoint under ", root_, " to resume from: ", last.name,
                         " is incomplete: ", last.problem,
                         " --> hint: run without --resume to start from scratch"));
      }
      if (newest == nullptr) {
        return absl::NotFoundError(absl::StrCat("no complete checkpoint under ", root_,
                                                " to resume from --> hint: run without --resume "
                                                "to start from scratch"));
      }
      // `latest` names the newest complete step unless a crash kept it behind a manifest
      // committed just before, or the step it names was removed or left incomplete: then the
      // newest complete step is what it should name, and is what loads.
      name = newest->name;
    } else {
      // An explicit step: the run branches from it. It must be complete; newer steps are set
      // aside once it has loaded (Start), so none of them blocks the run or gets overwritten.
      const auto it = std::find_if(steps.begin(), steps.end(),
                                   [&](const ckpt::StepInfo& s) { return s.name == name; });
      if (it == steps.end() || !it->complete) {
        return absl::NotFoundError(absl::StrCat(
            "checkpoint.load: ", root_, "/", name,
            it == steps.end() ? " does not exist" : absl::StrCat(" is incomplete: ", it->problem),
            " ", ckpt::CompleteHint(root_, name)));
      }
      *done_hint = it->step;
      return name;
    }
  }
  *done_hint = name.empty() ? 0 : std::max<int64_t>(0, ckpt::ParseStepDirName(name));
  TERN_RETURN_IF_ERROR(CheckFreeSteps(*done_hint));
  return name;
}

absl::Status CheckSharedRoot(const std::string& root, int rank, int ranks,
                             const GatherBytesFn& gather) {
  if (!gather || ranks <= 1) return absl::OkStatus();
  // Rank 0's nonce names this round's probes, so stale probes never count.
  std::string nonce;
  if (rank == 0) nonce = absl::StrCat(absl::Hex(std::random_device{}() ^ uint64_t(getpid()) << 20));
  TERN_ASSIGN_OR_RETURN(auto nonces, gather(nonce));
  nonce = nonces.at(0);
  auto probe = [&](int r) { return absl::StrCat(root, "/.probe-", nonce, "-rank-", r); };
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  const absl::Status wrote = ckpt::WriteFileAtomic(probe(rank), absl::StrCat(host, "\n"));
  TERN_ASSIGN_OR_RETURN(
      auto written, gather(Dump({{"status", StatusToJson(wrote)}, {"host", std::string(host)}})));
  absl::Status verdict;
  if (rank == 0) {
    std::vector<std::string> missing, errors;
    for (int r = 0; r < ranks; ++r) {
      auto j = nlohmann::json::parse(written[r], nullptr, false);
      const std::string h = j.is_object() ? j.value("host", "?") : "?";
      absl::Status st = j.is_object() ? StatusFromJson(j["status"]) : absl::InternalError("?");
      std::error_code ec;
      if (!st.ok()) {
        errors.push_back(absl::StrCat("rank ", r, " on ", h, ": ", st.message()));
      } else if (!std::filesystem::exists(probe(r), ec)) {
        missing.push_back(absl::StrCat(r, " (", h, ")"));
      }
      std::filesystem::remove(probe(r), ec);
    }
    if (!errors.empty()) {
      verdict = absl::FailedPreconditionError(absl::StrCat(
          "checkpoint.dir ", root, ": ranks cannot write there: ", absl::StrJoin(errors, "; ")));
    } else if (!missing.empty()) {
      verdict = absl::FailedPreconditionError(absl::StrCat(
          "checkpoint.dir ", root,
          " is not shared by every rank: rank 0 does not see the "
          "probe files of rank(s) ",
          absl::StrJoin(missing, ", "),
          " --> hint: put checkpoint.dir (or ternd's --checkpoint-root) on storage every node "
          "mounts at the same path"));
    }
  }
  TERN_ASSIGN_OR_RETURN(auto verdicts, gather(Dump(StatusToJson(verdict))));
  return StatusFromJson(nlohmann::json::parse(verdicts.at(0), nullptr, false));
}

absl::StatusOr<int64_t> Checkpointing::Start(zero::TrainingState& state, const ParamTable& table,
                                             const data::DataLoader& train) {
  table_ = &table;
  const bool resume = !cfg_.checkpoint.load.empty();
  TERN_RETURN_IF_ERROR(CheckSharedRoot(root_, opts_.rank, opts_.ranks, opts_.gather));
  // This round owns the root from now on: a stale round can no longer commit into it.
  if (opts_.round >= 0) {
    absl::Status claimed =
        opts_.rank == 0 ? ckpt::ClaimRound(root_, opts_.round) : absl::OkStatus();
    TERN_RETURN_IF_ERROR(Agree(claimed));
  }
  nlohmann::json mine = {{"status", StatusToJson(absl::OkStatus())}, {"name", ""}};
  if (opts_.rank == 0) {
    int64_t hint = 0;
    auto name = PrepareOnLeader(resume, &hint);
    if (name.ok()) {
      mine["name"] = *name;
    } else {
      mine["status"] = StatusToJson(name.status());
    }
  }
  // Everyone learns rank 0's verdict and the checkpoint it chose.
  std::string name = mine["name"];
  absl::Status leader = StatusFromJson(mine["status"]);
  if (opts_.gather) {
    TERN_ASSIGN_OR_RETURN(auto all, opts_.gather(Dump(mine)));
    auto j = nlohmann::json::parse(all.at(0), nullptr, false);
    if (j.is_discarded()) return absl::InternalError("malformed checkpoint plan from rank 0");
    name = j.value("name", "");
    leader = StatusFromJson(j["status"]);
  }
  TERN_RETURN_IF_ERROR(leader);
  if (name.empty()) return int64_t{0};  // a fresh run (also --resume-if-any with nothing)

  int64_t done = 0;
  const auto t0 = Clock::now();
  TERN_RETURN_IF_ERROR(Agree(Load(name, state, table, train, &done)));
  TERN_RETURN_IF_ERROR(state.SyncAfterLoad());
  const std::string& asked = cfg_.checkpoint.load;
  if (opts_.rank == 0) {
    // Branching from an explicit step sets newer ones aside; resuming from the newest complete
    // step repairs a `latest` that names anything else. Both before the first save.
    std::vector<std::string> moved;
    if (!asked.empty() && asked != "latest" && asked != spec::kLoadLatestIfAny) {
      TERN_ASSIGN_OR_RETURN(moved, ckpt::SetAsideNewerThan(root_, done));
    } else if (Trim(ckpt::ReadSmallFile(root_ + "/" + ckpt::kLatestName).value_or("")) != name) {
      TERN_RETURN_IF_ERROR(ckpt::WriteFileAtomic(root_ + "/" + ckpt::kLatestName, name + "\n"));
      if (opts_.sink)
        opts_.sink->OnEvent("checkpoint_latest_repaired", Dump({{"latest", name}, {"dir", root_}}));
    }
    if (!moved.empty() && opts_.sink)
      opts_.sink->OnEvent("checkpoint_set_aside",
                          Dump({{"dir", root_}, {"loaded", name}, {"set_aside", moved}}));
  }
  if (opts_.rank == 0 && opts_.sink) {
    opts_.sink->OnEvent("resume",
                        nlohmann::json{{"step", done},
                                       {"checkpoint", root_ + "/" + name},
                                       {"seconds", SecondsSince(t0)},
                                       {"samples_consumed", resumed_samples_},
                                       {"global_batch", cfg_.global_batch},
                                       {"saved_global_batch", saved_global_batch_},
                                       {"io_bytes_read", io_bytes_read_}}
                            .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  return done;
}

absl::Status Checkpointing::Load(const std::string& name, zero::TrainingState& state,
                                 const ParamTable& table, const data::DataLoader& train,
                                 int64_t* steps_done) {
  TERN_ASSIGN_OR_RETURN(auto ck, ckpt::Checkpoint::Open(root_, name, io_));
  TERN_RETURN_IF_ERROR(CheckSameModel(*ck, table));
  const nlohmann::json& extra = ck->extra();
  if (!extra.is_object() || !extra.contains("data_position")) {
    return absl::DataLossError(
        absl::StrCat(ck->dir(),
                     "/manifest.json has no extra.data_position; it was not written "
                     "by tern train and cannot be resumed"));
  }
  TERN_ASSIGN_OR_RETURN(data::DataPosition pos,
                        data::DataPosition::FromJson(extra["data_position"]));
  TERN_RETURN_IF_ERROR(train.CheckResume(pos));
  const int64_t step = ck->step();
  // The data position is the samples consumed, so the global batch may differ from the run
  // that saved it: the next step starts at that sample (data_loader.h); the LR schedule
  // continues by step.
  resumed_samples_ = pos.samples_consumed;
  const nlohmann::json& batch = extra.value("batch", nlohmann::json::object());
  saved_global_batch_ = batch.is_object() ? batch.value("global_batch", int64_t{0}) : 0;
  if (step > cfg_.train_iters) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint ", ck->dir(), " is at step ", step, ", past train_iters ",
                     cfg_.train_iters, " --> hint: raise train_iters to continue training"));
  }
  if (state.replicated() && opts_.ranks > 1 && opts_.gather) {
    TERN_RETURN_IF_ERROR(LoadReplicated(*ck, state));
  } else {
    for (const auto& seg : state.owned_segments()) {
      if (seg.numel == 0) continue;
      TERN_RETURN_IF_ERROR(ck->ReadState("master", seg.global_offset, seg.numel, seg.master));
      TERN_RETURN_IF_ERROR(ck->ReadState("exp_avg", seg.global_offset, seg.numel, seg.exp_avg));
      TERN_RETURN_IF_ERROR(
          ck->ReadState("exp_avg_sq", seg.global_offset, seg.numel, seg.exp_avg_sq));
    }
  }
  io_bytes_read_ = ck->io_bytes_read();
  *steps_done = step;
  return absl::OkStatus();
}

// Every rank holds the whole state (ZeRO stage 0): rank r reads its 1/N share (the share it
// would write, SegmentsToSave) and the ranks all-gather the shares. A rank whose read failed
// sends its error instead; every rank then fails with the first one.
absl::Status Checkpointing::LoadReplicated(ckpt::Checkpoint& ck, zero::TrainingState& state) {
  const auto owned = state.owned_segments();
  // One state at a time, so the transient copies stay at one state's size.
  for (const char* name : {"master", "exp_avg", "exp_avg_sq"}) {
    auto share = [&](int r) {
      std::vector<ckpt::Segment> out;
      for (auto& seg : SegmentsToSave(owned, /*replicated=*/true, r, opts_.ranks))
        if (seg.state == name) out.push_back(seg);
      return out;
    };
    // Mine: a status byte, then my share's elements in SegmentsToSave order.
    std::string mine(1, '\0');
    absl::Status read;
    for (const auto& seg : share(opts_.rank)) {
      const size_t at = mine.size();
      mine.resize(at + seg.numel * sizeof(float));
      read = ck.ReadState(seg.state, seg.global_offset, seg.numel, mine.data() + at);
      if (!read.ok()) break;
    }
    if (!read.ok()) mine = absl::StrCat("\1", Dump(StatusToJson(read)));
    TERN_ASSIGN_OR_RETURN(auto all, opts_.gather(mine));
    mine.clear();
    for (int r = 0; r < opts_.ranks; ++r) {
      const std::string& got = all.at(r);
      if (got.empty() || got[0] != 0) {
        absl::Status st = StatusFromJson(nlohmann::json::parse(got.substr(1), nullptr, false));
        return absl::Status(st.code(), absl::StrCat("rank ", r, ": ", st.message()));
      }
    }
    for (int r = 0; r < opts_.ranks; ++r) {
      const std::string& got = all[r];
      size_t at = 1;
      for (const auto& seg : share(r)) {
        const size_t n = seg.numel * sizeof(float);
        if (at + n > got.size()) return absl::InternalError("short replicated checkpoint share");
        // seg.data points into this rank's own state at the same place: write it there.
        std::memcpy(const_cast<void*>(seg.data), got.data() + at, n);
        at += n;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Checkpointing::Save(int64_t steps_done, uint64_t samples_consumed,
                                 zero::TrainingState& state, const ParamTable& table,
                                 const data::DataLoader& train, const StepMetrics& last) {
  table_ = &table;
  TERN_RETURN_IF_ERROR(Collect());
  const auto segments =
      SegmentsToSave(state.owned_segments(), state.replicated(), opts_.rank, opts_.ranks);
  pending_extra_ = {
      {"data_position", train.Position(samples_consumed).ToJson()},
      {"batch",
       {{"global_batch", cfg_.global_batch},
        {"micro_batch", cfg_.micro_batch},
        {"accum", cfg_.accum},
        {"dp_size", cfg_.dp_size},
        {"sp_size", cfg_.sp_size}}},
      {"rng", {{"seed", cfg_.seed}, {"note", "no dropout: data order derives from the seed"}}},
      {"job_spec", nlohmann::json::parse(tern::spec::JobSpecToJson(cfg_.spec), nullptr, false)},
      {"metrics",
       {{"step", last.step}, {"loss", last.loss}, {"lr", last.lr}, {"grad_norm", last.grad_norm}}},
      {"lr_schedule", {{"step", steps_done}, {"type", cfg_.spec.scheduler().type()}}},
  };
  pending_ = true;
  pending_step_ = steps_done;
  written_.store(false);
  absl::Status st = writer_->Save(root_, steps_done, opts_.rank, segments, table);
  if (!st.ok() || !async_) {
    // Failed to start, or blocking mode (persisted inline): collect now.
    result_ = st.ok() ? writer_->Wait() : absl::StatusOr<ckpt::RankShardResult>(st);
    written_.store(true);
    return async_ ? absl::OkStatus() : Collect();  // async: the error surfaces at collection
  }
  waiter_ = std::thread([this] {
    result_ = writer_->Wait();
    written_.store(true, std::memory_order_release);
  });
  return absl::OkStatus();
}

absl::Status Checkpointing::Poll() {
  TERN_RETURN_IF_ERROR(ReapCommit(/*wait=*/false));
  if (!pending_) return absl::OkStatus();
  double done = written_.load(std::memory_order_acquire) ? 1 : 0;
  if (opts_.all_reduce) TERN_RETURN_IF_ERROR(opts_.all_reduce(&done, 1));
  if (done + 0.5 < opts_.ranks) return absl::OkStatus();
  return Collect();
}

absl::Status Checkpointing::Finish() {
  TERN_RETURN_IF_ERROR(Collect());
  return ReapCommit(/*wait=*/true);
}

void Checkpointing::JoinWaiter() {
  if (waiter_.joinable()) waiter_.join();
}

absl::Status Checkpointing::Collect() {
  if (!pending_) return absl::OkStatus();
  JoinWaiter();
  pending_ = false;
  const std::string step_name = ckpt::StepDirName(pending_step_);
  nlohmann::json mine;
  if (result_.ok()) {
    mine = {{"status", StatusToJson(absl::OkStatus())}, {"result", result_->ToJson()}};
  } else {
    mine = {{"status", StatusToJson(result_.status())}};
  }
  std::vector<std::string> all = {Dump(mine)};
  if (opts_.gather) {
    TERN_ASSIGN_OR_RETURN(all, opts_.gather(all[0]));
  }
  std::vector<ckpt::RankShardResult> shards;
  uint64_t bytes = 0;
  double seconds = 0;
  for (size_t r = 0; r < all.size(); ++r) {
    auto j = nlohmann::json::parse(all[r], nullptr, false);
    if (j.is_discarded() || !j.contains("status"))
      return absl::InternalError(absl::StrCat("rank ", r, " sent a malformed checkpoint result"));
    absl::Status st = StatusFromJson(j["status"]);
    if (!st.ok()) {
      return absl::Status(st.code(), absl::StrCat("checkpoint ", step_name, ": rank ", r,
                                                  " failed to write its shard: ", st.message()));
    }
    TERN_ASSIGN_OR_RETURN(auto shard, ckpt::RankShardResult::FromJson(j["result"]));
    bytes += shard.size;
    seconds = std::max(seconds, shard.write_seconds);
    shards.push_back(std::move(shard));
  }
  if (opts_.rank != 0) return absl::OkStatus();
  TERN_RETURN_IF_ERROR(ReapCommit(/*wait=*/true));  // commits stay in step order
  ckpt::CommitOptions co;
  co.world = {{"dp_size", cfg_.dp_size},
              {"sp_size", cfg_.sp_size},
              {"zero_stage", cfg_.zero_stage},
              {"ranks", opts_.ranks}};
  co.extra = std::move(pending_extra_);
  co.keep_last = keep_last_;
  co.round = opts_.round;
  const double gib = double(bytes) / double(1ull << 30);
  commit_event_ = {{"step", pending_step_},
                   {"dir", root_ + "/" + step_name},
                   {"bytes", bytes},
                   {"seconds", seconds},
                   {"gibps", seconds > 0 ? gib / seconds : 0.0},
                   {"stage_ms", writer_->last_stage_seconds() * 1e3},
                   {"io_path", shards.empty() ? "" : shards[0].io_path},
                   {"async", async_}};
  committed_.store(false);
  auto commit = [this, step = pending_step_, shards = std::move(shards), co = std::move(co)] {
    const auto t0 = Clock::now();
    commit_status_ = ckpt::CommitManifest(root_, step, shards, *table_, co);
    commit_event_["commit_ms"] = SecondsSince(t0) * 1e3;
    committed_.store(true, std::memory_order_release);
  };
  if (!async_) {
    commit();
    return ReapCommit(/*wait=*/true);
  }
  committer_ = std::thread(std::move(commit));
  return absl::OkStatus();
}

absl::Status Checkpointing::ReapCommit(bool wait) {
  if (!committer_.joinable()) {
    if (!committed_.exchange(false)) return absl::OkStatus();  // inline commit (blocking mode)
  } else {
    if (!wait && !committed_.load(std::memory_order_acquire)) return absl::OkStatus();
    committer_.join();
    committed_.store(false);
  }
  TERN_RETURN_IF_ERROR(commit_status_);
  if (opts_.sink) {
    opts_.sink->OnEvent(
        "checkpoint", commit_event_.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  return absl::OkStatus();
}

}  // namespace tern::engine
