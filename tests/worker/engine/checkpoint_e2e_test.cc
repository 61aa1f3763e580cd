// End-to-end tests of checkpointing in `tern train` with the real binary: bit-exact resume
// (one rank, two ranks at ZeRO-2 and ZeRO-0, one rank -> two ranks), async vs blocking, crashes
// at every fault point of a write and an external SIGKILL during an async write, corruption
// detected by --resume and `tern ckpt verify`, `tern ckpt list`, and the overwrite guard.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/worker/engine/tern_cli.h"

namespace {

namespace fs = std::filesystem;

using tern::testing::JsonLines;
using tern::testing::ReadFile;
using tern::testing::Result;
using tern::testing::Tern;
using tern::testing::TernBin;

// step -> loss, from --json output.
std::map<int, double> Losses(const Result& r) {
  std::map<int, double> m;
  for (const auto& j : JsonLines(r.out, "step")) m[j["step"].get<int>()] = j["loss"].get<double>();
  return m;
}

std::vector<nlohmann::json> Events(const Result& r, const std::string& kind) {
  std::vector<nlohmann::json> v;
  for (const auto& j : JsonLines(r.out, "event"))
    if (j.value("kind", "") == kind)
      v.push_back(nlohmann::json::parse(j["message"].get<std::string>()));
  return v;
}

class CheckpointE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("tern-ckpt-e2e-" + std::to_string(getpid())));
    fs::create_directories(*dir_);
    Result r = tern::testing::PrepareCorpus(*dir_);
    ASSERT_EQ(r.code, 0) << r.out;
    // The LR schedule ends at a fixed step, so an 8-step run follows the 12-step run's curve.
    tern::testing::WriteTinyLlamaSpec(*dir_, nlohmann::json::parse(R"({
          "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_num_steps": 3,
                        "warmup_type": "linear", "total_num_steps": 12}},
          "train_iters": 12, "eval_iters": 1, "steps_per_print": 4,
          "checkpoint": {"interval": 4, "keep_last": 2}})"));
    reference_ = new std::map<int, double>(
        Losses(Train("ref", "--set checkpoint.async=false")));  // with checkpoints, blocking
    ASSERT_EQ(reference_->size(), 12u);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
    delete reference_;
  }
  static std::string Path(const std::string& name) { return (*dir_ / name).string(); }
  // `tern train` of the spec with checkpoints under <dir>/<ckpt>.
  static Result Train(const std::string& ckpt, const std::string& extra,
                      const std::string& env = "") {
    return Tern("train " + Path("spec.json") +
                    " --json --threads 1 --set checkpoint.dir=" + Path(ckpt) + " " + extra,
                env);
  }
  static void ExpectReference(const std::map<int, double>& got, int first, int last) {
    for (int s = first; s <= last; ++s) {
      ASSERT_TRUE(got.count(s)) << "step " << s << " missing";
      EXPECT_EQ(got.at(s), reference_->at(s)) << "step " << s;  // bit-equal doubles
    }
  }
  static fs::path* dir_;
  static std::map<int, double>* reference_;
};
fs::path* CheckpointE2E::dir_ = nullptr;
std::map<int, double>* CheckpointE2E::reference_ = nullptr;

TEST_F(CheckpointE2E, SingleRankResumeIsBitExactAndAsyncMatchesBlocking) {
  Result full = Train("async", "");  // async (default), every 4 steps, keep_last 2
  ASSERT_EQ(full.code, 0) << full.out;
  ExpectReference(Losses(full), 1, 12);
  auto saved = Events(full, "checkpoint");
  ASSERT_EQ(saved.size(), 3u) << full.out;
  EXPECT_EQ(saved[2]["step"], 12);
  EXPECT_GT(saved[2]["bytes"].get<uint64_t>(), 0u);
  EXPECT_GT(saved[2]["gibps"].get<double>(), 0.0);
  for (const auto& j : JsonLines(full.out, "step")) EXPECT_TRUE(j.contains("checkpoint_ms"));
  // keep_last 2: steps 8 and 12 remain; latest names 12.
  EXPECT_FALSE(fs::exists(Path("async/step-000004")));
  EXPECT_TRUE(fs::exists(Path("async/step-000008/manifest.json")));
  EXPECT_EQ(ReadFile(Path("async/latest")), "step-000012\n");

  Result first = Train("resume1", "--set train_iters=8");
  ASSERT_EQ(first.code, 0) << first.out;
  Result rest = Train("resume1", "--resume");
  ASSERT_EQ(rest.code, 0) << rest.out;
  auto losses = Losses(rest);
  EXPECT_EQ(losses.begin()->first, 9);
  ExpectReference(losses, 9, 12);
  auto resumed = Events(rest, "resume");
  ASSERT_EQ(resumed.size(), 1u);
  EXPECT_EQ(resumed[0]["step"], 8);

  // The manifest records the layout and everything a resume needs.
  auto m = nlohmann::json::parse(ReadFile(Path("resume1/step-000012/manifest.json")));
  EXPECT_EQ(m["world"]["dp_size"], 1);
  EXPECT_EQ(m["extra"]["data_position"]["samples_consumed"], 12 * 8);
  EXPECT_EQ(m["extra"]["rng"]["seed"], 1234);
  EXPECT_EQ(m["extra"]["lr_schedule"]["step"], 12);
  EXPECT_EQ(m["extra"]["metrics"]["loss"].get<double>(), reference_->at(12));
  EXPECT_EQ(m["extra"]["job_spec"]["train_iters"], "12");  // int64 maps to a JSON string

  // A fresh run refuses a directory that already holds checkpoints (exit 2, nothing written).
  Result again = Train("resume1", "");
  EXPECT_EQ(again.code, 2) << again.out;
  EXPECT_NE(again.out.find("already holds checkpoints"), std::string::npos) << again.out;
}

TEST_F(CheckpointE2E, TwoRanksZero2ResumeIsBitExact) {
  const std::string two =
      "--ranks 2 --set train_micro_batch_size_per_gpu=4 "
      "--set zero_optimization.stage=2 ";
  Result full = Train("z2full", two);
  ASSERT_EQ(full.code, 0) << full.out;
  Result first = Train("z2", two + "--set train_iters=8");
  ASSERT_EQ(first.code, 0) << first.out;
  EXPECT_TRUE(fs::exists(Path("z2/step-000008/rank-00001.bin")));
  Result rest = Train("z2", two + "--resume");
  ASSERT_EQ(rest.code, 0) << rest.out;
  auto a = Losses(full), b = Losses(rest);
  ASSERT_EQ(b.size(), 4u) << rest.out;
  for (int s = 9; s <= 12; ++s) EXPECT_EQ(a.at(s), b.at(s)) << "step " << s;
  for (int s = 1; s <= 12; ++s) EXPECT_NEAR(a.at(s), reference_->at(s), 1e-5) << "step " << s;
  auto m = nlohmann::json::parse(ReadFile(Path("z2/step-000012/manifest.json")));
  EXPECT_EQ(m["world"]["dp_size"], 2);
  EXPECT_EQ(m["world"]["zero_stage"], 2);
}

TEST_F(CheckpointE2E, ReplicatedStateIsSplitAndOneRankResumesOnTwo) {
  // ZeRO-0: every rank holds everything; each writes half.
  const std::string two = "--ranks 2 --set train_micro_batch_size_per_gpu=4 ";
  Result z0 = Train("z0", two + "--set zero_optimization.stage=0 --set train_iters=4");
  ASSERT_EQ(z0.code, 0) << z0.out;
  auto m = nlohmann::json::parse(ReadFile(Path("z0/step-000004/manifest.json")));
  for (const auto& [state, body] : m["states"].items()) {
    std::map<std::string, int64_t> per_file;
    for (const auto& g : body["segments"]) per_file[g["file"]] += g["numel"].get<int64_t>();
    ASSERT_EQ(per_file.size(), 2u) << state;
    const int64_t total = body["numel"];
    EXPECT_LE(std::abs(per_file["rank-00000.bin"] - per_file["rank-00001.bin"]), 1) << state;
    EXPECT_EQ(per_file["rank-00000.bin"] + per_file["rank-00001.bin"], total) << state;
  }
  Result z0b = Train("z0", two + "--set zero_optimization.stage=0 --set train_iters=6 --resume");
  ASSERT_EQ(z0b.code, 0) << z0b.out;
  auto losses = Losses(z0b);
  ASSERT_EQ(losses.size(), 2u) << z0b.out;
  for (int s = 5; s <= 6; ++s) EXPECT_NEAR(losses.at(s), reference_->at(s), 1e-5) << s;

  // Saved by one rank, resumed by two at ZeRO-1: each reads only its own slices.
  Result one = Train("grow", "--set train_iters=8");
  ASSERT_EQ(one.code, 0) << one.out;
  Result grown = Train("grow", two + "--set zero_optimization.stage=1 --resume");
  ASSERT_EQ(grown.code, 0) << grown.out;
  losses = Losses(grown);
  ASSERT_EQ(losses.size(), 4u) << grown.out;
  for (int s = 9; s <= 12; ++s) EXPECT_NEAR(losses.at(s), reference_->at(s), 1e-5) << s;
}

TEST_F(CheckpointE2E, CrashAtEveryFaultPointKeepsThePreviousCheckpoint) {
  struct Case {
    std::string point;
    int resumed_from;  // the newest committed checkpoint after the crash
  } cases[] = {{"after_shard_write", 4},
               {"before_manifest_rename", 4},
               {"after_manifest_rename_before_latest", 8}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.point);
    const std::string d = "fault-" + c.point;
    ASSERT_EQ(Train(d, "--set train_iters=4").code, 0);
    Result crash = Train(d, "--resume", "TERN_CKPT_FAULT=" + c.point);
    // Killed by its own fault point (the shell in between reports 128 + 9).
    EXPECT_TRUE(crash.signal == SIGKILL || crash.code == 128 + SIGKILL) << crash.out;
    EXPECT_NE(crash.out.find("TERN_CKPT_FAULT=" + c.point + ": killing process"),
              std::string::npos);
    EXPECT_TRUE(fs::exists(Path(d + "/step-000008"))) << crash.out;  // died writing step 8
    Result list = Tern("ckpt list --json " + Path(d));
    ASSERT_EQ(list.code, 0) << list.out;
    // Step 4 and (if its manifest was renamed into place) step 8 are complete; a later write
    // may have started while step 8 was being committed in the background: incomplete.
    auto steps = nlohmann::json::parse(list.out);
    ASSERT_GE(steps.size(), 2u) << list.out;
    EXPECT_EQ(steps[0]["name"], "step-000004") << list.out;
    EXPECT_TRUE(steps[0]["complete"]) << list.out;
    EXPECT_EQ(steps[1]["name"], "step-000008") << list.out;
    EXPECT_EQ(steps[1]["complete"].get<bool>(), c.resumed_from == 8) << list.out;
    for (size_t i = 2; i < steps.size(); ++i) EXPECT_FALSE(steps[i]["complete"]) << list.out;
    EXPECT_EQ(
        Tern("ckpt verify " + Path(d) + " --step step-00000" + std::to_string(c.resumed_from)).code,
        0);
    Result rest = Train(d, "--resume");
    ASSERT_EQ(rest.code, 0) << rest.out;
    auto losses = Losses(rest);
    EXPECT_EQ(losses.begin()->first, c.resumed_from + 1) << rest.out;
    ExpectReference(losses, c.resumed_from + 1, 12);
  }
}

TEST_F(CheckpointE2E, TwoRanksCrashInTheShardWriteThenResume) {
  const std::string two =
      "--ranks 2 --set train_micro_batch_size_per_gpu=4 "
      "--set zero_optimization.stage=1 --collective-timeout-s 5 ";
  ASSERT_EQ(Train("fault2", two + "--set train_iters=4").code, 0);
  Result crash = Train("fault2", two + "--resume", "TERN_CKPT_FAULT=after_shard_write");
  EXPECT_EQ(crash.code, 1) << crash.out;
  EXPECT_NE(crash.out.find("was killed by signal 9"), std::string::npos) << crash.out;
  EXPECT_FALSE(fs::exists(Path("fault2/step-000008/manifest.json")));
  Result rest = Train("fault2", two + "--resume");
  ASSERT_EQ(rest.code, 0) << rest.out;
  auto losses = Losses(rest);
  EXPECT_EQ(losses.begin()->first, 5);
  for (int s = 5; s <= 12; ++s) EXPECT_NEAR(losses.at(s), reference_->at(s), 1e-5) << s;
}

TEST_F(CheckpointE2E, SigkillDuringAnAsyncWriteLeavesTheLastCommittedCheckpoint) {
  // Checkpoint every step; SIGKILL the process while a step's shard is written but not yet
  // committed (its rank file exists, its manifest does not).
  const std::string out = Path("sigkill.out");
  const std::string cmd =
      TernBin() + " train " + Path("spec.json") +
      " --json --threads 1 --set checkpoint.interval=1 --set checkpoint.dir=" + Path("sigkill") +
      " --set train_iters=100000 > " + out + " 2>&1";
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), nullptr);
    _exit(127);
  }
  int killed_at = -1;
  for (int i = 0; i < 20000 && killed_at < 0; ++i) {
    for (int s = 4; s <= 11 && killed_at < 0; ++s) {
      char name[32];
      std::snprintf(name, sizeof(name), "sigkill/step-%06d", s);
      if (fs::exists(Path(name) + "/rank-00000.bin") &&
          !fs::exists(Path(name) + "/manifest.json")) {
        kill(pid, SIGKILL);
        killed_at = s;
      }
    }
    if (killed_at < 0) std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  if (killed_at < 0) kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_GT(killed_at, 0) << "no write in flight was seen";
  ASSERT_TRUE(WIFSIGNALED(status));
  // Every committed step verifies; the step killed mid-write is reported incomplete (so verify
  // fails), and the newest committed one is where the next run starts.
  // (The kill can land just after the commit: then nothing is incomplete.)
  auto steps = nlohmann::json::parse(Tern("ckpt list --json " + Path("sigkill")).out);
  bool incomplete = false;
  for (const auto& s : steps) incomplete |= !s["complete"].get<bool>();
  Result verify = Tern("ckpt verify " + Path("sigkill"));
  EXPECT_EQ(verify.code, incomplete ? 1 : 0) << verify.out;
  EXPECT_EQ(verify.out.find("INCOMPLETE") != std::string::npos, incomplete) << verify.out;
  EXPECT_EQ(verify.out.find("CORRUPT"), std::string::npos) << verify.out;
  int newest = 0;
  for (const auto& s : steps)
    if (s["complete"]) newest = s["step"];
  // When step k's shard is written, step k-1 may still be committing in the background;
  // step k-2 is committed.
  EXPECT_GE(newest, killed_at - 2);
  ASSERT_LT(newest, 12);
  Result rest = Train("sigkill", "--resume --set checkpoint.interval=1");
  ASSERT_EQ(rest.code, 0) << rest.out;
  auto losses = Losses(rest);
  EXPECT_EQ(losses.begin()->first, newest + 1);
  ExpectReference(losses, newest + 1, 12);
}

TEST_F(CheckpointE2E, FlippedByteFailsResumeAndVerifyNamingTheFile) {
  ASSERT_EQ(Train("flip", "").code, 0);
  const std::string victim = Path("flip/step-000012/rank-00000.bin");
  {
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(100);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x10;
    f.seekp(100);
    f.write(&c, 1);
  }
  const std::string flipped = ReadFile(victim);
  Result verify = Tern("ckpt verify " + Path("flip"));
  EXPECT_EQ(verify.code, 1) << verify.out;
  EXPECT_NE(verify.out.find("step-000012/rank-00000.bin"), std::string::npos) << verify.out;
  EXPECT_NE(verify.out.find("step-000008: ok"), std::string::npos) << verify.out;
  Result one = Tern("ckpt verify " + Path("flip") + " --step step-000008");
  EXPECT_EQ(one.code, 0) << one.out;

  Result resume = Train("flip", "--resume --set train_iters=16");
  EXPECT_EQ(resume.code, 2) << resume.out;
  EXPECT_NE(resume.out.find("step-000012/rank-00000.bin"), std::string::npos) << resume.out;
  EXPECT_NE(resume.out.find("step-000008 is complete"), std::string::npos) << resume.out;
  EXPECT_TRUE(JsonLines(resume.out, "step").empty());
  EXPECT_EQ(ReadFile(victim), flipped);  // nothing overwritten
  EXPECT_FALSE(fs::exists(Path("flip/step-000016")));

  // The previous checkpoint named by the hint resumes.
  Result prev = Train("flip", "--resume --set checkpoint.load=step-000008 --set train_iters=10");
  ASSERT_EQ(prev.code, 0) << prev.out;
  ExpectReference(Losses(prev), 9, 10);
  // It branched from step 8: the corrupt step 12 is set aside byte for byte, not deleted,
  // `latest` names the new run's step, and the root verifies again.
  auto aside = Events(prev, "checkpoint_set_aside");
  ASSERT_EQ(aside.size(), 1u) << prev.out;
  ASSERT_EQ(aside[0]["set_aside"].size(), 1u) << aside[0];
  const std::string moved = aside[0]["set_aside"][0];
  EXPECT_EQ(moved.rfind("step-000012.set-aside-", 0), 0u) << moved;
  EXPECT_EQ(ReadFile(Path("flip/" + moved + "/rank-00000.bin")), flipped);
  EXPECT_FALSE(fs::exists(Path("flip/step-000012")));
  EXPECT_EQ(ReadFile(Path("flip/latest")), "step-000010\n");
  Result reverify = Tern("ckpt verify " + Path("flip"));
  EXPECT_EQ(reverify.code, 0) << reverify.out;
  // A `latest` naming a step that is gone is repaired: --resume loads the newest complete step.
  { std::ofstream(Path("flip/latest")) << "step-000099\n"; }
  Result repaired = Train("flip", "--resume --set train_iters=11");
  ASSERT_EQ(repaired.code, 0) << repaired.out;
  ExpectReference(Losses(repaired), 11, 11);
  EXPECT_EQ(Events(repaired, "checkpoint_latest_repaired").size(), 1u) << repaired.out;
  EXPECT_EQ(ReadFile(Path("flip/latest")), "step-000011\n");

  // A missing shard file fails the same way (two ranks: both exit with the same error).
  ASSERT_EQ(Train("gone",
                  "--ranks 2 --set train_micro_batch_size_per_gpu=4 "
                  "--set zero_optimization.stage=2 --set train_iters=4")
                .code,
            0);
  fs::remove(Path("gone/step-000004/rank-00001.bin"));
  Result gone = Train("gone",
                      "--ranks 2 --set train_micro_batch_size_per_gpu=4 "
                      "--set zero_optimization.stage=2 --set train_iters=8 --resume");
  EXPECT_EQ(gone.code, 2) << gone.out;
  EXPECT_NE(gone.out.find("rank-00001.bin"), std::string::npos) << gone.out;
  Result vgone = Tern("ckpt verify " + Path("gone"));
  EXPECT_EQ(vgone.code, 1) << vgone.out;
  // A step directory without its manifest was never committed: verify fails on it.
  fs::create_directories(Path("gone/step-000008"));
  fs::remove(Path("gone/step-000004/rank-00000.bin"));
  Result vnone = Tern("ckpt verify " + Path("gone") + " --json");
  EXPECT_EQ(vnone.code, 1) << vnone.out;
  EXPECT_NE(vnone.out.find("\"incomplete\":true"), std::string::npos) << vnone.out;
  fs::remove(Path("gone/step-000004/manifest.json"));
  Result vstep = Tern("ckpt verify " + Path("gone/step-000004/"));
  EXPECT_EQ(vstep.code, 1) << vstep.out;
  EXPECT_NE(vstep.out.find("no committed manifest"), std::string::npos) << vstep.out;
}

}  // namespace

namespace {

double RelDiff(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-12); }

}  // namespace

TEST_F(CheckpointE2E, FourRanksZero3ContinueOnOtherLayoutsWithinTolerance) {
  // Saved by 4 ranks at ZeRO-3 (global batch 8 = 4 x 2), continued on 1 rank and on 2 ranks at
  // ZeRO-2 with the same global batch: losses follow the unchanged-layout reference.
  Result four = Train("l4",
                      "--ranks 4 --set train_micro_batch_size_per_gpu=2 "
                      "--set zero_optimization.stage=3 --set train_iters=8");
  ASSERT_EQ(four.code, 0) << four.out;
  fs::copy(Path("l4"), Path("l4b"), fs::copy_options::recursive);
  Result one = Train("l4", "--resume");
  ASSERT_EQ(one.code, 0) << one.out;
  Result two = Train("l4b",
                     "--ranks 2 --set train_micro_batch_size_per_gpu=4 "
                     "--set zero_optimization.stage=2 --resume");
  ASSERT_EQ(two.code, 0) << two.out;
  for (const Result* r : {&one, &two}) {
    auto losses = Losses(*r);
    ASSERT_EQ(losses.size(), 4u) << r->out;
    for (int s = 9; s <= 12; ++s) EXPECT_LT(RelDiff(losses.at(s), reference_->at(s)), 1e-5) << s;
  }
  // tern ckpt reshard --dry-run: the plan per new rank; the ranks together read each byte once
  // plus at most one block at each end of each owned range.
  Result plan = Tern("ckpt reshard " + Path("l4b") + " --ranks 3 --zero-stage 1 --dry-run --json");
  ASSERT_EQ(plan.code, 0) << plan.out;
  auto p = nlohmann::json::parse(plan.out);
  ASSERT_EQ(p["ranks"].size(), 3u);
  uint64_t owned = 0;
  for (const auto& r : p["ranks"]) {
    owned += r["owned_bytes"].get<uint64_t>();
    EXPECT_GE(r["read_bytes"].get<uint64_t>(), r["owned_bytes"].get<uint64_t>());
    EXPECT_FALSE(r["ranges"].empty());
  }
  auto inspect = Tern("ckpt inspect " + Path("l4b") + " --json");
  ASSERT_EQ(inspect.code, 0) << inspect.out;
  auto info = nlohmann::json::parse(inspect.out);
  EXPECT_EQ(owned, 3 * 4 * info["total_elements"].get<uint64_t>());
  EXPECT_EQ(info["manifest_version"], 2);
  EXPECT_EQ(info["step"], 12);
  EXPECT_EQ(info["layout"]["zero_stage"], 2);
  EXPECT_EQ(info["params"][0]["name"], "model.embed_tokens.weight");
  EXPECT_EQ(info["data_position"]["samples_consumed"], 12 * 8);
  Result text = Tern("ckpt inspect " + Path("l4b/step-000008"));
  ASSERT_EQ(text.code, 0) << text.out;
  EXPECT_NE(text.out.find("lm_head.weight"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("rank-00003.bin"), std::string::npos) << text.out;
}

TEST_F(CheckpointE2E, ResumeWithAnotherGlobalBatchContinuesAtTheNextSample) {
  Result first = Train("batch", "--set train_iters=4");  // global batch 8
  ASSERT_EQ(first.code, 0) << first.out;
  // Global batch 16 (micro 8 x accumulation 2): the LR schedule continues by step, the data at
  // sample 32.
  Result rest = Train("batch", "--resume --set train_iters=6 --set train_batch_size=16");
  ASSERT_EQ(rest.code, 0) << rest.out;
  auto resumed = Events(rest, "resume");
  ASSERT_EQ(resumed.size(), 1u) << rest.out;
  EXPECT_EQ(resumed[0]["step"], 4);
  EXPECT_EQ(resumed[0]["samples_consumed"], 32);
  EXPECT_EQ(resumed[0]["saved_global_batch"], 8);
  EXPECT_EQ(resumed[0]["global_batch"], 16);
  auto losses = Losses(rest);
  ASSERT_EQ(losses.size(), 2u) << rest.out;
  EXPECT_EQ(losses.begin()->first, 5);
  auto m = nlohmann::json::parse(ReadFile(Path("batch/step-000006/manifest.json")));
  EXPECT_EQ(m["extra"]["data_position"]["samples_consumed"], 4 * 8 + 2 * 16);
  EXPECT_EQ(m["extra"]["batch"]["global_batch"], 16);
  EXPECT_EQ(m["extra"]["batch"]["accum"], 2);
  // And back to 8 on two ranks: samples 64.. follow.
  Result back = Train("batch",
                      "--resume --set train_iters=7 --ranks 2 "
                      "--set train_micro_batch_size_per_gpu=4");
  ASSERT_EQ(back.code, 0) << back.out;
  auto m2 = nlohmann::json::parse(ReadFile(Path("batch/step-000007/manifest.json")));
  EXPECT_EQ(m2["extra"]["data_position"]["samples_consumed"], 64 + 8);
}
