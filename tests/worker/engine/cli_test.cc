// End-to-end tests of the engine side of the `tern` CLI: data prepare and retrieval, train (one and
// several rank processes), generate, describe, and the bad-input contract (exit 2, nothing
// written).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/worker/engine/tern_cli.h"
#include "worker/core/cpu_set.h"

namespace {

namespace fs = std::filesystem;

using tern::testing::JsonLines;
using tern::testing::Result;
using tern::testing::Tern;

std::string Bin() { return tern::testing::TernBin(); }

// A shell command run in the background in its own process group; whatever happens in the
// test, nothing it started outlives it (the group is SIGKILLed and reaped).
struct Background {
  explicit Background(const std::string& cmd) {
    pid = fork();
    if (pid == 0) {
      setpgid(0, 0);
      execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), nullptr);
      _exit(127);
    }
    setpgid(pid, pid);
  }
  ~Background() {
    kill(-pid, SIGKILL);
    while (waitpid(-pid, nullptr, WNOHANG) > 0) {
    }
  }
  pid_t pid = -1;
};

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("tern-cli-test-" + std::to_string(getpid())));
    fs::create_directories(*dir_);
    // The sgemm peak cache of this suite (inherited by every `tern` it starts).
    setenv("XDG_CACHE_HOME", (*dir_ / "cache").c_str(), 1);
    unsetenv("TERN_PEAK_GFLOPS");
    Result r = tern::testing::PrepareCorpus(*dir_);
    ASSERT_EQ(r.code, 0) << r.out;
    tern::testing::WriteTinyLlamaSpec(*dir_, nlohmann::json::parse(R"({
          "model": {"max_position_embeddings": 64},
          "train_iters": 12, "eval_interval": 6, "eval_iters": 1, "steps_per_print": 4,
          "zero_optimization": {"stage": 2}})"));
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  static std::string Path(const std::string& name) { return (*dir_ / name).string(); }
  static fs::path* dir_;
};
fs::path* CliTest::dir_ = nullptr;

TEST_F(CliTest, TrainJsonLossFallsAndGenerateIsDeterministic) {
  Result r =
      Tern("train " + Path("spec.json") + " --json --threads 1 --save-final " + Path("model"));
  ASSERT_EQ(r.code, 0) << r.out;
  auto steps = JsonLines(r.out, "step");
  ASSERT_EQ(steps.size(), 12u) << r.out;
  for (const char* key : {"step", "loss", "lr", "tokens_per_s", "step_ms"})
    EXPECT_TRUE(steps[0].contains(key)) << key;
  EXPECT_LT(steps.back()["loss"].get<double>(), steps.front()["loss"].get<double>() - 1.0);
  auto evals = JsonLines(r.out, "eval");
  ASSERT_EQ(evals.size(), 2u);
  EXPECT_EQ(evals[0]["step"], 6);
  auto summary = JsonLines(r.out, "summary");
  ASSERT_EQ(summary.size(), 1u);
  for (const char* key : {"tokens_per_s", "step_ms_median", "mfu", "peak_rss_mib", "params",
                          "final_loss", "val_loss"})
    EXPECT_TRUE(summary[0].contains(key)) << key;
  EXPECT_GT(summary[0]["mfu"].get<double>(), 0.0);
  EXPECT_EQ(summary[0]["step"], 12) << "the summary belongs to the last step";
  // The summary says which sgemm peak MFU is against: measured now or cached, in this suite's
  // cache; the "peak" event says the same.
  const std::string cache = Path("cache/tern/sgemm_peak.json");
  const std::string source = summary[0].value("peak_source", "");
  EXPECT_TRUE(source == "measured" || source == "cached") << source;
  EXPECT_EQ(summary[0].value("peak_cache", ""), cache);
  EXPECT_TRUE(fs::exists(cache));
  int peak_events = 0;
  for (const auto& e : JsonLines(r.out, "event")) {
    if (e.value("kind", "") != "peak") continue;
    ++peak_events;
    auto p = nlohmann::json::parse(e["message"].get<std::string>());
    EXPECT_EQ(p["source"], source);
    EXPECT_DOUBLE_EQ(p["gflops"].get<double>(), summary[0]["sgemm_peak_gflops"].get<double>());
  }
  EXPECT_EQ(peak_events, 1);
  EXPECT_TRUE(fs::exists(Path("model/model.safetensors")));
  Result g1 = Tern("generate --model-dir " + Path("model") +
                   " --prompt 'The ' --max-new-tokens 20 --temperature 0");
  Result g2 = Tern("generate --model-dir " + Path("model") +
                   " --prompt 'The ' --max-new-tokens 20 --temperature 0");
  ASSERT_EQ(g1.code, 0) << g1.out;
  EXPECT_EQ(g1.out, g2.out);
  EXPECT_EQ(g1.out.rfind("The ", 0), 0u);
  EXPECT_GE(g1.out.size(), 24u);
  // The KV cache changes nothing but the speed: greedy tokens equal recomputing the whole
  // context every time, also past the model's positions (where the window slides).
  for (const char* n : {"20", "100"}) {
    Result cached = Tern("generate --model-dir " + Path("model") +
                         " --prompt 'The ' --temperature 0 --max-new-tokens " + n);
    Result plain = Tern("generate --model-dir " + Path("model") +
                        " --prompt 'The ' --temperature 0 --no-kv-cache --max-new-tokens " + n);
    ASSERT_EQ(plain.code, 0) << plain.out;
    EXPECT_EQ(cached.out, plain.out) << n << " tokens";
  }
  // tern eval on the validation windows the training evaluated last (eval_iters 1 x micro
  // batch 8, in order) gives the run's final val_loss, in batches of any size; bits per byte =
  // nats / ln 2.
  Result ev = Tern("eval --model-dir " + Path("model") + " --data " + Path("corpus_val") +
                   " --seq-len 32 --batch 3 --max-windows 8 --json");
  ASSERT_EQ(ev.code, 0) << ev.out;
  auto ppl = nlohmann::json::parse(ev.out, nullptr, false);
  ASSERT_TRUE(ppl.is_object()) << ev.out;
  EXPECT_EQ(ppl.value("windows", 0), 8) << ev.out;
  const double val = summary[0]["val_loss"].get<double>();
  EXPECT_NEAR(ppl["nats_per_token"].get<double>(), val, 1e-5 * val) << ev.out;
  EXPECT_NEAR(ppl["bits_per_byte"].get<double>(), val / std::log(2.0), 1e-4) << ev.out;
  Result rt = Tern("eval --model-dir " + Path("model") +
                   " --retrieval --lengths 64 --depths 0,1 --trials 2 --json");
  ASSERT_EQ(rt.code, 0) << rt.out;
  auto rows = nlohmann::json::parse(rt.out, nullptr, false);
  ASSERT_TRUE(rows.is_object() && rows["rows"].size() == 2u) << rt.out;
  EXPECT_NE(Tern("eval --model-dir " + Path("model")).code, 0);  // nothing to measure
  // Ms-PoE: ratio 1 in every layer changes nothing; a real range decodes the same tokens with
  // the KV cache as recomputing the context each token (the prompt's slots kept, also once the
  // window slides past the model's positions); bad values are refused by name.
  Result rt1 = Tern("eval --model-dir " + Path("model") +
                    " --retrieval --lengths 64 --depths 0,1 --trials 2 --json --ms-poe 1:1:0");
  ASSERT_EQ(rt1.code, 0) << rt1.out;
  auto rows1 = nlohmann::json::parse(rt1.out, nullptr, false);
  ASSERT_TRUE(rows1.is_object()) << rt1.out;
  EXPECT_EQ(rows1["rows"], rows["rows"]);
  EXPECT_EQ(rows1["ms_poe"], "1:1:0");
  Result mp1 = Tern("generate --model-dir " + Path("model") +
                    " --prompt 'The ' --max-new-tokens 20 --temperature 0 --ms-poe 1:1:0");
  EXPECT_EQ(mp1.out, g1.out);
  for (const char* n : {"20", "100"}) {
    const std::string gen = "generate --model-dir " + Path("model") +
                            " --prompt 'The quick brown ' --temperature 0 --ms-poe 1.2:1.8:1"
                            " --max-new-tokens " +
                            n;
    Result cached = Tern(gen);
    Result plain = Tern(gen + " --no-kv-cache");
    ASSERT_EQ(cached.code, 0) << cached.out;
    EXPECT_EQ(cached.out, plain.out) << n << " tokens";
  }
  for (const auto& [args, says] : std::vector<std::pair<std::string, std::string>>{
           {"eval --retrieval --ms-poe 1.8:1.2",
            "--ms-poe: Ms-PoE '1.8:1.2': MIN 1.8 exceeds MAX 1.2"},
           {"generate --prompt a --ms-poe 0.5:1.8", "MIN 0.5 is below 1"},
           {"generate --prompt a --ms-poe 1.2", "expected MIN:MAX"},
           {"eval --retrieval --ms-poe 1.2:1.8", "the model has 2 layers"}}) {
    Result bad = Tern(args + " --model-dir " + Path("model"));
    EXPECT_EQ(bad.code, 2) << args << ": " << bad.out;
    EXPECT_NE(bad.out.find(says), std::string::npos) << args << ": " << bad.out;
  }
  Result too_long = Tern("eval --model-dir " + Path("model") + " --retrieval --lengths 65");
  EXPECT_EQ(too_long.code, 2);
  EXPECT_NE(too_long.out.find("--lengths: 65 is outside [53, 64]"), std::string::npos)
      << too_long.out;
  // Several prompts decode in one batch (a KV cache row each, prompts of different lengths):
  // each text is the one its prompt gives alone.
  Result batch =
      Tern("generate --model-dir " + Path("model") +
           " --prompt 'The ' --and-prompt 'A quick ' --temperature 0 --max-new-tokens 20");
  Result alone = Tern("generate --model-dir " + Path("model") +
                      " --prompt 'A quick ' --temperature 0 --max-new-tokens 20");
  ASSERT_EQ(batch.code, 0) << batch.out;
  EXPECT_EQ(batch.out, g1.out + alone.out);
  // --stop ends at the first occurrence (here of the first letter or digit generated); --stats
  // reports the timing.
  size_t at = 4;
  while (at < g1.out.size() && !std::isalnum(static_cast<unsigned char>(g1.out[at]))) ++at;
  ASSERT_LT(at, g1.out.size()) << g1.out;
  Result stopped = Tern("generate --model-dir " + Path("model") +
                        " --prompt 'The ' --temperature 0 --max-new-tokens 200 --stats --stop " +
                        g1.out.substr(at, 1));
  ASSERT_EQ(stopped.code, 0) << stopped.out;
  EXPECT_EQ(stopped.out.rfind(g1.out.substr(0, at + 1) + "\n", 0), 0u) << stopped.out;
  EXPECT_NE(stopped.out.find("KV cache on; first token after"), std::string::npos) << stopped.out;
}

// `tern data retrieval`: training data in the eval task's format, every document seq_len tokens;
// bad options exit 2 naming the option and write nothing.
TEST_F(CliTest, DataRetrievalWritesTheEvalFormatAndRefusesBadOptions) {
  const fs::path dir = Path("retrieval-data");
  fs::create_directories(dir);
  Result ok =
      Tern("data retrieval --output " + (dir / "r").string() +
           " --seq-len 64 --min-length 60 --docs 10 --val-docs 2 --key-digits 5:7 --seed 3");
  ASSERT_EQ(ok.code, 0) << ok.out;
  auto report = nlohmann::json::parse(ok.out.substr(ok.out.find('{')), nullptr, false);
  ASSERT_TRUE(report.is_object()) << ok.out;
  EXPECT_EQ(report["train_docs"], 10);
  EXPECT_EQ(report["val_docs"], 2);
  EXPECT_EQ(report["train_tokens"], 640);
  EXPECT_EQ(report["min_length"], 60);
  EXPECT_EQ(report["val_prefix"], (dir / "r_val").string());
  EXPECT_EQ(fs::file_size(dir / "r.bin"), 640u * 2);  // uint16 tokens
  for (const auto& [args, says] : std::vector<std::pair<std::string, std::string>>{
           {"--seq-len 64 --key-digits 5:x", "--key-digits: '5:x' is not N or MIN:MAX"},
           {"--seq-len 64 --key-digits 7:5", "key digits 7:5"},
           {"--seq-len 40", "seq_len 40 is too short"},
           {"--seq-len 64 --min-length 70", "min_length 70 exceeds seq_len 64"},
           {"--seq-len 64 --docs 0", "docs must be at least 1"}}) {
    Result bad = Tern("data retrieval --output " + (dir / "bad").string() + " " + args);
    EXPECT_EQ(bad.code, 2) << args << ": " << bad.out;
    EXPECT_NE(bad.out.find(says), std::string::npos) << args << ": " << bad.out;
  }
  EXPECT_FALSE(fs::exists(dir / "bad.bin"));
  EXPECT_FALSE(fs::exists(dir / "bad.idx"));
}

TEST_F(CliTest, TwoRankProcessesMatchOneRank) {
  // Same global batch (8): one rank x 8 rows vs two ranks x 4 rows, ZeRO-2.
  Result one = Tern("train " + Path("spec.json") + " --json --threads 1 --set train_iters=6");
  Result two = Tern(
      "train " + Path("spec.json") +
      " --json --ranks 2 --threads 1 --set train_iters=6 --set train_micro_batch_size_per_gpu=4");
  ASSERT_EQ(one.code, 0) << one.out;
  ASSERT_EQ(two.code, 0) << two.out;
  auto a = JsonLines(one.out, "step"), b = JsonLines(two.out, "step");
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 6u) << two.out;
  for (size_t i = 0; i < a.size(); ++i) {
    const double la = a[i]["loss"], lb = b[i]["loss"];
    EXPECT_NEAR(la, lb, 1e-5 * la) << "step " << i + 1;
  }
  EXPECT_GT(b.back().value("bytes_intra_node", 0), 0);  // ZeRO-2 traffic was accounted
  // The peak was measured at most once on this host for one thread: the second run read it.
  auto s = JsonLines(two.out, "summary");
  ASSERT_EQ(s.size(), 1u) << two.out;
  EXPECT_EQ(s[0].value("peak_source", ""), "cached");
  EXPECT_EQ(s[0]["step"], 6);
  // --peak-gflops wins and reaches every rank: 2 ranks x 100 GFLOP/s.
  Result given = Tern("train " + Path("spec.json") +
                      " --ranks 2 --threads 1 --set train_iters=2 --peak-gflops 100"
                      " --set train_micro_batch_size_per_gpu=4");
  ASSERT_EQ(given.code, 0) << given.out;
  EXPECT_NE(given.out.find("of 200.0 GFLOP/s sgemm peak (given by --peak-gflops)"),
            std::string::npos)
      << given.out;
  EXPECT_NE(given.out.find("step      2/2      | loss "), std::string::npos) << given.out;
  EXPECT_NE(given.out.find("[memory] rank 1, params "), std::string::npos) << given.out;
  EXPECT_EQ(given.out.find("{\""), std::string::npos) << "human output: " << given.out;
}

// sequence_parallel_size (DeepSpeed-Ulysses): two ranks sharing each sample train the same
// losses as one rank with the whole sequence for 20 steps; with four ranks (2 data-parallel x 2
// sequence-parallel, ZeRO-3) too. Its checkpoint has one shard per rank, and one rank resumes
// from it on the same losses.
TEST_F(CliTest, SequenceParallelRanksMatchOneRank) {
  const std::string spec =
      "train " + Path("spec.json") + " --json --threads 1 --set train_iters=20";
  Result one = Tern(spec);
  Result two = Tern(spec + " --ranks 2 --set sequence_parallel_size=2");
  Result four = Tern(spec +
                     " --ranks 4 --set sequence_parallel_size=2 --set zero_optimization.stage=3"
                     " --set train_micro_batch_size_per_gpu=4");
  ASSERT_EQ(one.code, 0) << one.out;
  ASSERT_EQ(two.code, 0) << two.out;
  ASSERT_EQ(four.code, 0) << four.out;
  auto a = JsonLines(one.out, "step");
  ASSERT_EQ(a.size(), 20u);
  for (const Result* r : {&two, &four}) {
    auto b = JsonLines(r->out, "step");
    ASSERT_EQ(b.size(), 20u) << r->out;
    for (size_t i = 0; i < a.size(); ++i) {
      const double la = a[i]["loss"], lb = b[i]["loss"];
      EXPECT_NEAR(la, lb, 1e-5 * la) << "step " << i + 1;
    }
    if (r != &two) continue;  // validation batches are micro-batch sized: the same with two
    auto ea = JsonLines(one.out, "eval"), eb = JsonLines(r->out, "eval");
    ASSERT_EQ(ea.size(), eb.size());
    ASSERT_FALSE(ea.empty());
    for (size_t i = 0; i < ea.size(); ++i) {
      const double va = ea[i]["val_loss"], vb = eb[i]["val_loss"];
      EXPECT_NEAR(va, vb, 1e-5 * va);
    }
  }
  // An uneven head split (3 kv heads of 2 query heads over 2 ranks: 2 and 1, AllToAllV).
  const std::string uneven = spec +
                             " --set train_iters=6 --set model.hidden_size=48"
                             " --set model.num_attention_heads=6 --set model.num_key_value_heads=3";
  Result u1 = Tern(uneven);
  Result u2 = Tern(uneven + " --ranks 2 --set sequence_parallel_size=2");
  ASSERT_EQ(u1.code, 0) << u1.out;
  ASSERT_EQ(u2.code, 0) << u2.out;
  auto ua = JsonLines(u1.out, "step"), ub = JsonLines(u2.out, "step");
  ASSERT_EQ(ua.size(), 6u);
  ASSERT_EQ(ub.size(), 6u) << u2.out;
  for (size_t i = 0; i < ua.size(); ++i) {
    const double la = ua[i]["loss"], lb = ub[i]["loss"];
    EXPECT_NEAR(la, lb, 1e-5 * la) << "uneven step " << i + 1;
  }
  // A checkpoint of the two-rank run at step 10: a shard per rank, then one rank resumes.
  const std::string ck = Path("sp-ckpt");
  Result saved = Tern(spec + " --ranks 2 --set sequence_parallel_size=2 --set train_iters=10" +
                      " --set checkpoint.dir=" + ck);
  ASSERT_EQ(saved.code, 0) << saved.out;
  EXPECT_TRUE(fs::exists(ck + "/step-000010/rank-00000.bin"));
  EXPECT_TRUE(fs::exists(ck + "/step-000010/rank-00001.bin"));
  auto manifest = nlohmann::json::parse(tern::testing::ReadFile(ck + "/step-000010/manifest.json"));
  EXPECT_EQ(manifest["world"]["sp_size"], 2);
  EXPECT_EQ(manifest["world"]["ranks"], 2);
  Result resumed = Tern(spec + " --set checkpoint.dir=" + ck + " --resume");
  ASSERT_EQ(resumed.code, 0) << resumed.out;
  auto c = JsonLines(resumed.out, "step");
  ASSERT_EQ(c.size(), 10u) << resumed.out;
  for (const auto& m : c) {
    const int step = m["step"];
    const double la = a[size_t(step - 1)]["loss"], lc = m["loss"];
    EXPECT_NEAR(la, lc, 1e-5 * la) << "step " << step;
  }
  // The device budget `tern describe` plans for a rank (head-sharded activations and the
  // all-to-all buffers included) trains; one byte less is refused naming the buffer.
  Result d =
      Tern("describe " + Path("spec.json") + " --json --ranks 2 --set sequence_parallel_size=2");
  ASSERT_EQ(d.code, 0) << d.out;
  const auto rank = nlohmann::json::parse(d.out)["per_rank"];
  const uint64_t need = rank["param_bytes"].get<uint64_t>() + rank["grad_bytes"].get<uint64_t>() +
                        rank["optim_bytes"].get<uint64_t>() +
                        rank["gather_pool_bytes"].get<uint64_t>() +
                        rank["activation_bytes"].get<uint64_t>();
  const std::string budget = spec + " --set train_iters=1 --set eval_interval=0" +
                             " --ranks 2 --set sequence_parallel_size=2" +
                             " --set resources.device_memory_budget=";
  Result fits = Tern(budget + std::to_string(need));
  EXPECT_EQ(fits.code, 0) << fits.out;
  Result short_one = Tern(budget + std::to_string(need - 1));
  EXPECT_NE(short_one.code, 0);
  EXPECT_NE(short_one.out.find("Ulysses all-to-all receive buffer"), std::string::npos)
      << short_one.out;
  // Refused by name: a world it does not divide, more ranks than kv heads.
  Result bad = Tern(spec + " --set sequence_parallel_size=2");
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.out.find("sequence_parallel_size: 2 does not divide the world size 1"),
            std::string::npos)
      << bad.out;
  Result heads = Tern(spec + " --ranks 4 --set sequence_parallel_size=4");
  EXPECT_EQ(heads.code, 2);
  EXPECT_NE(heads.out.find("exceeds num_key_value_heads 2"), std::string::npos) << heads.out;
}

TEST_F(CliTest, FourRanksOnTwoNodesReportCrossNodeBytesAndMemory) {
  Result r = Tern("train " + Path("spec.json") +
                  " --json --ranks 4 --ranks-per-node 2 --threads 1 --set train_iters=3"
                  " --set train_micro_batch_size_per_gpu=2 --set zero_optimization.stage=3"
                  " --set zero_optimization.stage3_param_persistence_threshold=0");
  ASSERT_EQ(r.code, 0) << r.out;
  auto steps = JsonLines(r.out, "step");
  ASSERT_EQ(steps.size(), 3u) << r.out;
  // A data-parallel group spanning two nodes: part of its traffic is cross-node (the step
  // reports every rank's bytes: rank 0 alone sends only to its node neighbour in the rings).
  EXPECT_GT(steps.back()["bytes_inter_node"].get<uint64_t>(), 0u);
  EXPECT_GT(steps.back()["bytes_intra_node"].get<uint64_t>(), 0u);
  // Every rank reports what it holds; at ZeRO-3 that is about a quarter of the model each.
  int memory_events = 0;
  for (const auto& e : JsonLines(r.out, "event")) {
    if (e.value("kind", "") != "memory") continue;
    ++memory_events;
    auto m = nlohmann::json::parse(e["message"].get<std::string>());
    EXPECT_EQ(m["zero_stage"], 3);
    EXPECT_GT(m["optim_bytes"].get<uint64_t>(), 0u);
    // ZeRO-3 gathers every unit into the working pool: at least one buffer is reported.
    EXPECT_GT(m["gather_pool_bytes"].get<uint64_t>(), 0u);
  }
  EXPECT_EQ(memory_events, 4);
}

TEST_F(CliTest, KilledRankFailsTheJobWithinTheTimeout) {
  const std::string cmd =
      Bin() + " train " + Path("spec.json") +
      " --json --ranks 2 --threads 1 --collective-timeout-s 5 --set train_iters=100000"
      " > " +
      Path("kill.out") + " 2>&1";
  Background bg(cmd);
  const pid_t launcher = bg.pid;
  // Wait until training runs, then SIGKILL rank 1 mid-step.
  pid_t victim = -1;
  for (int i = 0; i < 300 && victim < 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::ifstream out(Path("kill.out"));
    std::string text((std::istreambuf_iterator<char>(out)), {});
    if (text.find("\"step\":3") == std::string::npos) continue;
    for (const auto& e : fs::directory_iterator("/proc")) {
      const std::string name = e.path().filename().string();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream cmdline(e.path() / "cmdline");
      std::string c((std::istreambuf_iterator<char>(cmdline)), {});
      std::ifstream stat(e.path() / "stat");
      std::string s((std::istreambuf_iterator<char>(stat)), {});
      if (c.find(Path("spec")) == std::string::npos && c.find("tern-launch") == std::string::npos)
        continue;
      // A child of our launcher (field 4 of /proc/PID/stat) running rank 1.
      const size_t paren = s.rfind(')');
      std::istringstream fields(paren == std::string::npos ? "" : s.substr(paren + 2));
      std::string state;
      pid_t ppid = -1;
      fields >> state >> ppid;
      if (ppid == launcher &&
          c.find(std::string("--rank") + '\0' + "1" + '\0') != std::string::npos)
        victim = std::stoi(name);
    }
  }
  ASSERT_GT(victim, 0) << "rank 1 not found";
  const auto t0 = std::chrono::steady_clock::now();
  kill(victim, SIGKILL);
  int status = 0;
  waitpid(launcher, &status, 0);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 0);
  EXPECT_LT(secs, 5 + 10);  // the collective timeout plus the launcher's grace
  std::ifstream out(Path("kill.out"));
  std::string text((std::istreambuf_iterator<char>(out)), {});
  EXPECT_NE(text.find("rank 1 was killed by signal 9"), std::string::npos) << text;
  EXPECT_NE(text.find("error: rank 0:"), std::string::npos) << text;  // the survivor's own error
}

// `tern train --ranks 2` binds each rank to its own CPU set (the split of this process's
// mask) with threads = the set's size: checked in /proc/<pid>/status while the ranks run and
// in each rank's placement report. --no-bind-cores leaves the mask alone; a thread count
// above a rank's set is refused naming both numbers.
TEST_F(CliTest, RanksRunBoundToTheirOwnCpuSets) {
  namespace cpu = tern::cpu;
  auto mine = cpu::ThisProcessAffinity();
  ASSERT_TRUE(mine.ok()) << mine.status();
  auto expect = cpu::SplitCpus(cpu::ReadCpuTopology(), *mine, 2);
  ASSERT_TRUE(expect.ok()) << expect.status();
  const std::string out_path = Path("bind.out");
  const std::string cmd = Bin() + " train " + Path("spec.json") +
                          " --json --ranks 2 --set train_iters=100000 --set eval_interval=0"
                          " --peak-gflops 1 > " +
                          out_path + " 2>&1";
  Background bg(cmd);
  std::map<int, nlohmann::json> reports;  // rank -> placement report
  for (int i = 0; i < 600 && reports.size() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    for (const auto& e : JsonLines(tern::testing::ReadFile(out_path), "event")) {
      if (e["kind"] != "placement") continue;
      auto p = nlohmann::json::parse(e["message"].get<std::string>());
      reports[p["rank"].get<int>()] = p;
    }
  }
  ASSERT_EQ(reports.size(), 2u) << tern::testing::ReadFile(out_path);
  for (const auto& [rank, p] : reports) {
    const cpu::CpuList& set = expect->sets[rank];
    const int size = static_cast<int>(set.size());
    // The rank is still training: its mask in /proc is the assigned set.
    auto proc = cpu::ProcessAffinityFromProc(p["pid"].get<pid_t>());
    ASSERT_TRUE(proc.ok()) << proc.status();
    EXPECT_EQ(*proc, set) << "rank " << rank;
    EXPECT_EQ(p["cpus"], cpu::FormatCpuList(set)) << p;
    EXPECT_EQ(p["bound"], cpu::FormatCpuList(set)) << p;
    EXPECT_EQ(p["threads"], size) << p;
    EXPECT_EQ(p["omp_threads"], size) << p;
    EXPECT_EQ(p["blas_threads"], size) << p;
  }
  if (expect->shared) {
    EXPECT_NE(tern::testing::ReadFile(out_path).find("ranks share CPUs"), std::string::npos);
  }

  // Without binding every rank keeps the launcher's mask.
  Result r = Tern("train " + Path("spec.json") +
                  " --json --ranks 2 --no-bind-cores --threads 1 --set train_iters=1"
                  " --peak-gflops 1");
  ASSERT_EQ(r.code, 0) << r.out;
  int unbound = 0;
  for (const auto& e : JsonLines(r.out, "event")) {
    if (e["kind"] != "placement") continue;
    auto p = nlohmann::json::parse(e["message"].get<std::string>());
    EXPECT_EQ(p["cpus"], cpu::FormatCpuList(*mine)) << p;
    EXPECT_TRUE(p["bound"].is_null()) << p;
    EXPECT_EQ(p["threads"], 1) << p;
    ++unbound;
  }
  EXPECT_EQ(unbound, 2) << r.out;

  // More threads than rank 0's set: refused before any rank starts.
  const size_t smallest = expect->sets[0].size();
  r = Tern("train " + Path("spec.json") +
           " --ranks 2 --set resources.threads_per_rank=" + std::to_string(smallest + 1));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("error: resources.threads_per_rank " + std::to_string(smallest + 1) +
                       " is more than the " + std::to_string(smallest) + " CPU(s) of rank 0's set"),
            std::string::npos)
      << r.out;
  // tern-worker's ranks: `tern rank --cpus` refuses more threads than its set, before the
  // rendezvous.
  r = Tern("rank --spec-file " + Path("spec.json") +
           " --rank 0 --world-size 1 --rendezvous tcp://127.0.0.1:1 --threads 3 --cpus 0-1 --json");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("error: rank 0: --threads 3 (resources.threads_per_rank) is more than the "
                       "2 CPU(s) the rank is bound to (0-1)"),
            std::string::npos)
      << r.out;
}

TEST_F(CliTest, BadInputExitsTwoWithOneLineAndWritesNothing) {
  std::ofstream(Path("bad.json")) << "{\"train_iters\": 5,";
  struct Case {
    std::string args, expect;
  } cases[] = {
      {"train " + Path("bad.json"), "malformed JSON"},
      {"train " + Path("spec.json") + " --set zero_optimization.stagee=1",
       "unknown field 'zero_optimization.stagee'"},
      {"train " + Path("spec.json") + " --set model.num_attention_heads=5",
       "not divisible by num_attention_heads 5"},
      {"train " + Path("spec.json") + " --set model.num_key_value_heads=3",
       "num_key_value_heads: 3"},
      {"train " + Path("spec.json") + " --set data.path=" + Path("missing"),
       "missing.bin does not exist"},
      {"train " + Path("spec.json") + " --set model.vocab_size=50",
       "outside the vocabulary [0, 50)"},
  };
  for (const auto& c : cases) {
    Result r = Tern(c.args + " --save-final " + Path("should-not-exist"));
    EXPECT_EQ(r.code, 2) << c.args << "\n" << r.out;
    EXPECT_NE(r.out.find(c.expect), std::string::npos) << c.args << "\n" << r.out;
    EXPECT_FALSE(fs::exists(Path("should-not-exist")));
  }
  // Wrong magic and truncated data files.
  fs::copy_file(Path("corpus.bin"), Path("broken.bin"));
  std::ofstream(Path("broken.idx")) << "NOTMMIDIDX-----------------------------------";
  Result r = Tern("train " + Path("spec.json") + " --set data.path=" + Path("broken"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("broken.idx"), std::string::npos) << r.out;
}

// FPDT (chunks of 10 tokens over sequences of 32: the last chunk is short) trains the same
// losses as the whole-sequence path for 20 steps, with its store in the host tier and, with
// ZeRO-2 over two ranks, too.
TEST_F(CliTest, FpdtTrainsTheSameLossesAsTheWholeSequence) {
  const std::string base = "train " + Path("spec.json") +
                           " --json --threads 1 --set train_iters=20 --set eval_interval=0"
                           " --set eval_iters=0";
  const std::string fpdt =
      " --set sequence_parallel.fpdt.enabled=true --set sequence_parallel.fpdt.chunk_size=10";
  Result plain = Tern(base);
  Result chunked = Tern(base + fpdt);
  Result two = Tern(base + fpdt + " --ranks 2 --set train_micro_batch_size_per_gpu=4");
  // Over a sequence-parallel group of 2: chunks of 8 tokens, 4 per rank, round-robin.
  Result sp = Tern(base +
                   " --set sequence_parallel.fpdt.enabled=true"
                   " --set sequence_parallel.fpdt.chunk_size=8 --ranks 2"
                   " --set sequence_parallel_size=2");
  ASSERT_EQ(plain.code, 0) << plain.out;
  ASSERT_EQ(chunked.code, 0) << chunked.out;
  ASSERT_EQ(two.code, 0) << two.out;
  ASSERT_EQ(sp.code, 0) << sp.out;
  auto a = JsonLines(plain.out, "step"), b = JsonLines(chunked.out, "step"),
       c = JsonLines(two.out, "step"), d = JsonLines(sp.out, "step");
  ASSERT_EQ(a.size(), 20u);
  ASSERT_EQ(b.size(), 20u);
  ASSERT_EQ(c.size(), 20u);
  ASSERT_EQ(d.size(), 20u);
  for (size_t i = 0; i < a.size(); ++i) {
    const double la = a[i]["loss"], lb = b[i]["loss"], lc = c[i]["loss"], ld = d[i]["loss"];
    EXPECT_NEAR(la, lb, 1e-4 * la) << "step " << i + 1;
    EXPECT_NEAR(la, lc, 1e-4 * la) << "step " << i + 1;
    EXPECT_NEAR(la, ld, 1e-4 * la) << "step " << i + 1;
  }
  EXPECT_LT(double(b.back()["loss"]), double(b.front()["loss"]));
  auto s = JsonLines(chunked.out, "summary");
  ASSERT_EQ(s.size(), 1u);
  EXPECT_GT(s[0]["host_peak_bytes"].get<double>(), 0) << chunked.out;
  EXPECT_EQ(JsonLines(plain.out, "summary")[0]["host_peak_bytes"].get<double>(), 0);
}

// resources.device_memory_budget: the training state and every activation buffer count against
// it; the exact figure `tern describe` plans trains, one byte less is refused naming the buffer.
TEST_F(CliTest, DeviceMemoryBudgetIsExactAndRefusesByName) {
  Result d = Tern("describe " + Path("spec.json") + " --json --ranks 1");
  ASSERT_EQ(d.code, 0) << d.out;
  const auto rank = nlohmann::json::parse(d.out)["per_rank"];
  const uint64_t state = rank["param_bytes"].get<uint64_t>() + rank["grad_bytes"].get<uint64_t>() +
                         rank["optim_bytes"].get<uint64_t>();
  const uint64_t need =
      state + rank["gather_pool_bytes"].get<uint64_t>() + rank["activation_bytes"].get<uint64_t>();
  auto run = [&](uint64_t budget) {
    return Tern("train " + Path("spec.json") +
                " --threads 1 --set train_iters=1 --set eval_interval=0 --set eval_iters=0"
                " --set resources.device_memory_budget=" +
                std::to_string(budget));
  };
  Result fits = run(need);
  EXPECT_EQ(fits.code, 0) << fits.out;
  Result short_one = run(need - 1);
  EXPECT_NE(short_one.code, 0) << short_one.out;
  EXPECT_NE(short_one.out.find("more device memory does not fit"), std::string::npos)
      << short_one.out;
  EXPECT_NE(short_one.out.find("activations for 8x32 tokens"), std::string::npos) << short_one.out;
  EXPECT_NE(short_one.out.find("resources.device_memory_budget"), std::string::npos)
      << short_one.out;
  Result tiny = run(state - 1);
  EXPECT_NE(tiny.out.find("training state"), std::string::npos) << tiny.out;
}

// Output locations are probed before the first step; nonsense flags are refused by name.
TEST_F(CliTest, BadOutputPathsAndFlagsFailBeforeTraining) {
  std::ofstream(Path("a-file")) << "keep me";
  struct Case {
    std::string args, expect;
  } cases[] = {
      {"--save-final " + Path("a-file"),
       "--save-final " + Path("a-file") + ": exists and is not a directory"},
      {"--set checkpoint.dir=" + Path("a-file") + "/ckpt",
       "checkpoint.dir " + Path("a-file") + "/ckpt: cannot create"},
      {"--threads 0", "--threads"},
      {"--ranks 0", "--ranks"},
      {"--collective-timeout-s -1", "--collective-timeout-s"},
  };
  for (const auto& c : cases) {
    Result r = Tern("train " + Path("spec.json") + " --json " + c.args);
    EXPECT_EQ(r.code, 2) << c.args << "\n" << r.out;
    EXPECT_NE(r.out.find(c.expect), std::string::npos) << c.args << "\n" << r.out;
    EXPECT_TRUE(JsonLines(r.out, "step").empty()) << "trained before failing: " << r.out;
  }
  EXPECT_EQ(tern::testing::ReadFile(Path("a-file")), "keep me");
  for (const char* flag :
       {"--max-new-tokens -5", "--temperature -1", "--top-k -2", "--threads 0"}) {
    Result r = Tern(std::string("generate --model-dir ") + Path("none") + " " + flag);
    EXPECT_EQ(r.code, 2) << flag << "\n" << r.out;
    EXPECT_NE(r.out.find(std::string(flag).substr(0, std::string(flag).find(' '))),
              std::string::npos)
        << r.out;
  }
}

TEST_F(CliTest, DescribePhi3Mini) {
  const std::string src = std::getenv("TERN_SOURCE_DIR");
  Result r = Tern("describe " + src +
                  "/config/phi3-mini.json --json --ranks 64 --set model.config_file=" + src +
                  "/config/models/phi3-mini.json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["params"], 3821079552ull);
  EXPECT_EQ(j["zero_stage"], 3);
  const auto& rank = j["per_rank"];
  const double state = rank["param_bytes"].get<double>() + rank["grad_bytes"].get<double>() +
                       rank["optim_bytes"].get<double>();
  EXPECT_NEAR(state, 16.0 * 3821079552.0 / 64, 1e6);  // ZeRO-3: a 1/64 share of everything
  // Activations of a 4k-token micro-batch and the gather pool come on top.
  EXPECT_GT(rank["peak_bytes"].get<double>(), state + rank["activation_bytes"].get<double>());
  EXPECT_GT(rank["gather_pool_bytes"].get<double>(), 0);
  EXPECT_GT(j["flops_per_token"].get<double>(), 6 * 3.8e9);
}

}  // namespace
