// Helpers shared by the data tests: scratch directories and small datasets.
#pragma once

#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/data/indexed_dataset.h"

namespace tern::data::testing {

// A fresh directory under the test temp dir, removed when the object dies.
class ScratchDir {
 public:
  ScratchDir() {
    std::string tmpl = ::testing::TempDir() + "tern_data_XXXXXX";
    char* made = ::mkdtemp(tmpl.data());
    EXPECT_NE(made, nullptr);
    path_ = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string File(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }
  // Names of the entries in the directory, sorted.
  std::vector<std::string> List() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(path_)) {
      names.push_back(e.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  std::string path_;
};

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Writes one sequence per document with IndexedDatasetBuilder.
inline void WriteDataset(const std::string& prefix, const std::vector<std::vector<int32_t>>& docs,
                         DType dtype) {
  auto builder = IndexedDatasetBuilder::Create(prefix, dtype);
  ASSERT_TRUE(builder.ok()) << builder.status();
  for (const auto& doc : docs) ASSERT_TRUE((*builder)->AddDocument(doc).ok());
  ASSERT_TRUE((*builder)->Finish().ok());
}

}  // namespace tern::data::testing
