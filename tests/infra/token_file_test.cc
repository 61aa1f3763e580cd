#include "infra/token_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

namespace tern::infra {
namespace {

std::string WriteTemp(const std::string& text) {
  char tmpl[] = "/tmp/tern-token-XXXXXX";
  const int fd = ::mkstemp(tmpl);
  ::close(fd);
  std::ofstream(tmpl) << text;
  return tmpl;
}

TEST(TokenFileTest, ReadsEveryNonEmptyLineTrimmed) {
  const std::string path = WriteTemp("\n  admin-1 \r\n\t\nworker-2\n");
  auto tokens = ReadTokenFile(path);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(*tokens, (std::vector<std::string>{"admin-1", "worker-2"}));
  std::remove(path.c_str());
}

TEST(TokenFileTest, MissingOrEmptyFileIsAnError) {
  auto missing = ReadTokenFile("/nonexistent/tern-token");
  EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
  EXPECT_NE(missing.status().message().find("/nonexistent/tern-token"), std::string::npos);
  const std::string path = WriteTemp(" \n\n");
  auto empty = ReadTokenFile(path);
  EXPECT_TRUE(absl::IsInvalidArgument(empty.status())) << empty.status();
  std::remove(path.c_str());
}

}  // namespace
}  // namespace tern::infra
