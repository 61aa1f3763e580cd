// Bad input as a careless or hostile user gives it to `tern`: spec files, model configs, CLI
// flags, data files, checkpoints and exported models. Every case must end in a clean refusal:
// exit code 2 (never a signal, an uncaught exception or a hang), one message naming the
// culprit, before any training step, and nothing already written changed or removed.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "tests/worker/engine/tern_cli.h"

namespace fs = std::filesystem;

namespace tern::testing {
namespace {

// Every regular file under `root` with its bytes: a snapshot to prove nothing was written.
std::map<std::string, std::string> Snapshot(const fs::path& root) {
  std::map<std::string, std::string> files;
  if (!fs::exists(root)) return files;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) files[fs::relative(e.path(), root).string()] = ReadFile(e.path());
  return files;
}

void WriteText(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
}

class HostileInputs : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("tern-hostile-" + std::to_string(getpid())));
    fs::create_directories(*dir_);
    ASSERT_EQ(PrepareCorpus(*dir_).code, 0);
    WriteText(*dir_ / "spec.json", R"({"model": {"model_type": "llama", "hidden_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2},
        "data": {"path": ")" + (*dir_ / "corpus").string() +
                                       R"(", "seq_len": 32},
        "train_micro_batch_size_per_gpu": 4, "train_iters": 4, "eval_interval": 0})");
    // A good checkpoint root and an exported model, the "work already written".
    Result r = Tern("train " + Spec() + " --threads 1 --set checkpoint.interval=2" +
                    " --set checkpoint.dir=" + Path("good") + " --save-final " + Path("model"));
    ASSERT_EQ(r.code, 0) << r.out;
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  static std::string Path(const std::string& name) { return (*dir_ / name).string(); }
  static std::string Spec() { return Path("spec.json"); }

  // Runs `tern args` under a timeout and checks the refusal.
  static void ExpectRefused(const std::string& args, const std::string& culprit) {
    SCOPED_TRACE(args);
    Result r = Tern(args, "timeout 60");
    EXPECT_EQ(r.signal, 0) << r.out;
    EXPECT_NE(r.code, 124) << "hung: " << r.out;
    EXPECT_EQ(r.code, 2) << r.out;
    EXPECT_NE(r.out.find(culprit), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("\"type\":\"step\""), std::string::npos) << "trained: " << r.out;
    for (unsigned char c : r.out)  // the message is printable, whatever the input held
      EXPECT_TRUE(c == '\n' || (c >= 0x20 && c < 0x7f)) << "byte " << int(c) << " in " << r.out;
  }

  // A copy of the good checkpoint root, damaged by `damage`; a resume from it must be refused
  // naming `culprit` and leave every byte of it as it was.
  static void ExpectResumeRefused(const std::string& name,
                                  const std::function<void(const fs::path&)>& damage,
                                  const std::string& culprit, const std::string& extra = "") {
    SCOPED_TRACE(name);
    const fs::path root = *dir_ / name;
    fs::copy(*dir_ / "good", root, fs::copy_options::recursive);
    damage(root);
    const auto before = Snapshot(root);
    ExpectRefused("train " + Spec() +
                      " --json --threads 1 --resume --set checkpoint.interval=2"
                      " --set checkpoint.dir=" +
                      root.string() + " --set train_iters=8 " + extra,
                  culprit);
    EXPECT_EQ(Snapshot(root), before) << "the checkpoint root changed";
  }

  static fs::path* dir_;
};
fs::path* HostileInputs::dir_ = nullptr;

TEST_F(HostileInputs, SpecFiles) {
  ExpectRefused("train /dev/zero", "job spec /dev/zero: not a regular file");
  ExpectRefused("describe /dev/urandom", "not a regular file");
  ExpectRefused("train " + Path(""), "not a regular file");
  ASSERT_EQ(mkfifo(Path("fifo.json").c_str(), 0600), 0);  // no writer: must not block
  ExpectRefused("describe " + Path("fifo.json"), "not a regular file");
  WriteText(Path("huge.json"), "{\"name\": \"" + std::string(5 << 20, 'x') + "\"}");
  ExpectRefused("describe " + Path("huge.json"), "bytes, more than");
  WriteText(Path("deep.json"), std::string(200000, '[') + std::string(200000, ']'));
  ExpectRefused("train " + Path("deep.json"), "nested deeper than");
  std::string deep_obj;
  for (int i = 0; i < 100000; ++i) deep_obj += "{\"a\":";
  WriteText(Path("deepobj.json"), deep_obj + "1" + std::string(100000, '}'));
  ExpectRefused("submit " + Path("deepobj.json"), "nested deeper than");
  WriteText(Path("utf8.json"), "{\"name\": \"\xff\xfe\x1b[2J\"}");
  ExpectRefused("describe " + Path("utf8.json"), "malformed JSON");
  WriteText(Path("nul.json"), std::string("{\"name\": \"a\0b\"}", 15));
  ExpectRefused("describe " + Path("nul.json"), "malformed JSON");
  ExpectRefused("describe " + Spec() + " --set model.hidden_size=1e400", "model.hidden_size");
  ExpectRefused("train " + Spec() + " --set checkpoint.dir=x --set checkpoint.async=yes",
                "checkpoint.async");
  ExpectRefused(
      "describe " + Spec() + " --set " + std::string(100, 'a') + "=" + std::string(100, '['),
      "nested deeper than");
}

TEST_F(HostileInputs, DerivedSizesAndMemory) {
  ExpectRefused("train " + Spec() +
                    " --set model.hidden_size=1000000000 --set model.num_attention_heads=1 "
                    "--set model.num_key_value_heads=1",
                "model.hidden_size: 1000000000 is too large");
  ExpectRefused("train " + Spec() + " --set train_micro_batch_size_per_gpu=100000000",
                "train_micro_batch_size_per_gpu: 100000000 sequences x data.seq_len 32");
  // Far larger than any test machine: refused with the plan's numbers before allocating, and
  // before the checkpoint directory is created.
  const std::string big =
      " --set model.hidden_size=16384 --set model.num_attention_heads=128"
      " --set model.num_key_value_heads=128 --set model.num_hidden_layers=64";
  ExpectRefused("train " + Spec() + big + " --set checkpoint.dir=" + Path("never"),
                "memory: this job needs");
  EXPECT_FALSE(fs::exists(Path("never")));
  ExpectRefused("train " + Spec() + big + " --ranks 2", "memory: this job needs");
  // A cluster rank refuses before it joins the rendezvous (nothing listens on port 1).
  WriteText(Path("big.json"), R"({"model": {"model_type": "llama", "hidden_size": 16384,
      "num_hidden_layers": 64, "num_attention_heads": 128},
      "data": {"path": ")" + Path("corpus") +
                                  R"(", "seq_len": 32}, "train_iters": 4})");
  ExpectRefused("rank --spec-file " + Path("big.json") +
                    " --rank 0 --world-size 1 --rendezvous tcp://127.0.0.1:1",
                "memory: this job needs");
}

TEST_F(HostileInputs, ModelConfigFiles) {
  ExpectRefused("describe " + Spec() + " --set model.config_file=/dev/zero",
                "model.config_file /dev/zero: not a regular file");
  std::string deep;
  for (int i = 0; i < 100000; ++i) deep += "{\"a\":";
  WriteText(Path("deepcfg.json"), deep + "1" + std::string(100000, '}'));
  ExpectRefused("describe " + Spec() + " --set model.config_file=" + Path("deepcfg.json"),
                "nested deeper than");
  WriteText(Path("cfg.json"), R"({"model_type": "llama", "hidden_size": 64, "rope_scaling": 7})");
  ExpectRefused("train " + Spec() + " --set model.config_file=" + Path("cfg.json"),
                "'rope_scaling' = 7");
}

TEST_F(HostileInputs, CliFlags) {
  ExpectRefused("train " + Spec() + " --threads 0", "--threads");
  ExpectRefused("train " + Spec() + " --ranks 0", "--ranks");
  ExpectRefused("train " + Spec() + " --ranks 100000", "--ranks");
  ExpectRefused("train " + Spec() + " --ranks 3 --ranks-per-node 2", "--ranks-per-node 2");
  ExpectRefused("train " + Spec() + " --peak-gflops -5", "--peak-gflops");
  ExpectRefused("train " + Spec() + " --collective-timeout-s 0", "--collective-timeout-s");
  ExpectRefused("train " + Spec() + " --resume", "--resume: the job spec sets no checkpoint.dir");
  ExpectRefused("generate --model-dir " + Path("model") + " --max-new-tokens -1",
                "--max-new-tokens");
  ExpectRefused("generate --model-dir " + Path("model") + " --temperature -1", "--temperature");
  ExpectRefused("generate --model-dir " + Path("model") + " --checkpoint " + Path("good"),
                "exactly one of --model-dir and --checkpoint");
  // An output path that cannot be written fails before training; the file there survives.
  WriteText(Path("a-file"), "precious");
  ExpectRefused("train " + Spec() + " --save-final " + Path("a-file"), "--save-final");
  ExpectRefused("train " + Spec() + " --set checkpoint.dir=" + Path("a-file") + "/sub",
                "checkpoint.dir");
  EXPECT_EQ(ReadFile(Path("a-file")), "precious");
}

TEST_F(HostileInputs, DataFiles) {
  const fs::path d = *dir_ / "data";
  fs::create_directories(d);
  auto copy = [&](const std::string& name) {
    fs::copy_file(*dir_ / "corpus.bin", d / (name + ".bin"));
    fs::copy_file(*dir_ / "corpus.idx", d / (name + ".idx"));
    return (d / name).string();
  };
  const std::string magic = copy("magic");
  {
    std::fstream f(magic + ".idx", std::ios::in | std::ios::out | std::ios::binary);
    f.write("NOTMAGIC", 8);
  }
  ExpectRefused("train " + Spec() + " --set data.path=" + magic, "magic.idx");
  const std::string trunc = copy("trunc");
  fs::resize_file(trunc + ".bin", fs::file_size(trunc + ".bin") / 2);
  ExpectRefused("train " + Spec() + " --set data.path=" + trunc, "trunc.bin");
  const std::string itrunc = copy("itrunc");
  fs::resize_file(itrunc + ".idx", 20);
  ExpectRefused("train " + Spec() + " --set data.path=" + itrunc, "itrunc.idx");
  // Byte tokens (up to 255) do not fit a 16-token vocabulary.
  ExpectRefused("train " + Spec() + " --set model.vocab_size=16", "vocab");
  ExpectRefused("train " + Spec() + " --set data.path=/dev/zero", "data.path");
  fs::create_symlink("/dev/zero", d / "dev.bin");
  fs::create_symlink("/dev/zero", d / "dev.idx");
  ExpectRefused("train " + Spec() + " --set data.path=" + (d / "dev").string(),
                "not a regular file");
  ExpectRefused("train " + Spec() +
                    " --set data.seq_len=64 --set model.max_position_embeddings=64 "
                    "--set data.path=" +
                    copy("short") + " --set data.val_path=" + (d / "missing").string(),
                "data.val_path");
}

TEST_F(HostileInputs, Checkpoints) {
  ExpectResumeRefused(
      "garbage-manifest",
      [](const fs::path& r) { WriteText(r / "step-000004" / "manifest.json", "{not json"); },
      "step-000004/manifest.json");
  ExpectResumeRefused(
      "deep-manifest",
      [](const fs::path& r) {
        WriteText(r / "step-000004" / "manifest.json",
                  std::string(100000, '[') + std::string(100000, ']'));
      },
      "nested deeper than");
  ExpectResumeRefused(
      "wrong-types",
      [](const fs::path& r) {
        WriteText(r / "step-000004" / "manifest.json",
                  R"({"format": "tern-checkpoint", "version": 1, "step": "four",
                      "files": 7, "states": {"master": 1}})");
      },
      "step-000004");
  ExpectResumeRefused(
      "short-shard",
      [](const fs::path& r) {
        fs::resize_file(r / "step-000004" / "rank-00000.bin",
                        fs::file_size(r / "step-000004" / "rank-00000.bin") - 4096);
      },
      "rank-00000.bin");
  ExpectResumeRefused(
      "flipped",
      [](const fs::path& r) {
        std::fstream f(r / "step-000004" / "rank-00000.bin",
                       std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(5000);
        f.write("XXXX", 4);
      },
      "checksum mismatch");
  ExpectResumeRefused(
      "traversal-latest",
      [](const fs::path& r) {
        WriteText(r / "latest", "../../../../etc\n");
        fs::remove(r / "step-000004" / "manifest.json");
        fs::remove(r / "step-000002" / "manifest.json");
      },
      "no complete checkpoint");
  ExpectResumeRefused(
      "missing-step", [](const fs::path&) {},
      "checkpoint.load: ", "--set checkpoint.load=step-000099");
  ExpectResumeRefused(
      "other-model", [](const fs::path&) {}, "model", "--set model.hidden_size=64");
  ExpectRefused("generate --checkpoint " + Path("garbage-manifest") + " --prompt x",
                "manifest.json");
  ExpectRefused("ckpt verify /dev/null", "/dev/null");
}

TEST_F(HostileInputs, ExportedModels) {
  auto variant = [&](const std::string& name, const std::string& config,
                     const std::function<void(const fs::path&)>& damage) {
    const fs::path d = *dir_ / name;
    fs::copy(*dir_ / "model", d, fs::copy_options::recursive);
    if (!config.empty()) WriteText(d / "config.json", config);
    if (damage) damage(d / "model.safetensors");
    return d.string();
  };
  // config.json asks for far more parameters than the file holds: refused before allocating,
  // with the counts of what is missing and mis-shaped.
  const std::string huge =
      variant("huge",
              R"({"model_type": "llama", "hidden_size": 65536, "num_hidden_layers": 512,
          "num_attention_heads": 64, "vocab_size": 256, "max_position_embeddings": 64})",
              nullptr);
  ExpectRefused("generate --model-dir " + huge + " --prompt x", "missing (4590)");
  auto header = [](const std::string& json) {
    return [json](const fs::path& p) {
      std::string body = ReadFile(p);
      const uint64_t len = json.size();
      std::string out(reinterpret_cast<const char*>(&len), 8);
      WriteText(p, out + json + body.substr(8 + *reinterpret_cast<const uint64_t*>(body.data())));
    };
  };
  ExpectRefused("generate --model-dir " +
                    variant("badshape", "", header(R"({"model.embed_tokens.weight": {"dtype": "F32",
                                       "shape": "big", "data_offsets": [0, 4]}})")) +
                    " --prompt x",
                "model.embed_tokens.weight");
  ExpectRefused("generate --model-dir " +
                    variant("notobj", "", header(R"({"model.embed_tokens.weight": 5})")) +
                    " --prompt x",
                "model.embed_tokens.weight");
  ExpectRefused(
      "generate --model-dir " +
          variant("deephdr", "", header(std::string(5000, '[') + std::string(5000, ']'))) +
          " --prompt x",
      "bad header");
  ExpectRefused("generate --model-dir " +
                    variant("hugelen", "",
                            [](const fs::path& p) {
                              std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
                              const uint64_t len = ~uint64_t{0};
                              f.write(reinterpret_cast<const char*>(&len), 8);
                            }) +
                    " --prompt x",
                "bad header length");
}

}  // namespace
}  // namespace tern::testing
