// Helpers for end-to-end tests that run the real `tern` binary ($TERN_BIN_DIR/tern).
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace tern::testing {

struct Result {
  int code = -1;  // exit code; -1 when killed by a signal
  int signal = 0;
  std::string out;  // stdout and stderr
};

inline std::string TernBin() { return std::string(std::getenv("TERN_BIN_DIR")) + "/tern"; }

// Runs `env tern args` through the shell and collects its output.
inline Result Tern(const std::string& args, const std::string& env = "") {
  Result r;
  FILE* p = popen((env + " " + TernBin() + " " + args + " 2>&1").c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.signal = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
  return r;
}

// The JSON objects of `out` whose "type" is `type`.
inline std::vector<nlohmann::json> JsonLines(const std::string& out, const std::string& type) {
  std::vector<nlohmann::json> v;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.value("type", "") == type) v.push_back(j);
  }
  return v;
}

// Writes dir/spec.json: the tiny Llama the engine e2e suites train (hidden 32, 2 layers, 4
// heads, 2 kv heads, seq 32, micro batch 8, lr 0.01) on dir/corpus, with `patch` merged in
// (RFC 7386: nested fields add to or replace the defaults).
inline void WriteTinyLlamaSpec(const std::filesystem::path& dir, const nlohmann::json& patch) {
  nlohmann::json spec = {{"model",
                          {{"model_type", "llama"},
                           {"hidden_size", 32},
                           {"num_hidden_layers", 2},
                           {"num_attention_heads", 4},
                           {"num_key_value_heads", 2}}},
                         {"data", {{"path", (dir / "corpus").string()}, {"seq_len", 32}}},
                         {"train_micro_batch_size_per_gpu", 8},
                         {"optimizer", {{"params", {{"lr", 0.01}}}}}};
  spec.merge_patch(patch);
  std::ofstream(dir / "spec.json") << spec.dump();
}

inline std::string ReadFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// Writes a small English corpus of '%'-separated documents into dir/corpus.txt and prepares
// it as the dataset dir/corpus (plus dir/corpus_val). Returns the `tern data prepare` result.
inline Result PrepareCorpus(const std::filesystem::path& dir) {
  std::ofstream corpus(dir / "corpus.txt");
  const char* lines[] = {"The quick brown fox jumps over the lazy dog.",
                         "A journey of a thousand miles begins with a single step.",
                         "To be or not to be, that is the question.",
                         "All that glitters is not gold."};
  for (int d = 0; d < 400; ++d) corpus << lines[d % 4] << "\n" << lines[(d * 7) % 4] << "\n%\n";
  corpus.close();
  return Tern("data prepare --tokenizer byte --input " + (dir / "corpus.txt").string() +
              " --output " + (dir / "corpus").string() + " --doc-separator % --seed 3");
}

}  // namespace tern::testing
