#include "worker/core/text.h"

#include <gtest/gtest.h>

#include <string>

namespace tern {
namespace {

TEST(CheckName, AcceptsPrintableAsciiAndUtf8) {
  EXPECT_TRUE(CheckName("name", "llama-tiny v2 (run 3)", false).ok());
  EXPECT_TRUE(CheckName("name", "modèle-日本語", false).ok());
  EXPECT_TRUE(CheckName("name", "", true).ok());
  EXPECT_TRUE(CheckName("name", std::string(kMaxNameBytes, 'a'), false).ok());
}

TEST(CheckName, RefusesControlsLengthAndBadUtf8NamingTheFieldAndRule) {
  for (const std::string& bad : {std::string("a\nb"), std::string("\x1b[31mred"),
                                 std::string("a\x7f"), std::string("\xc2\x9b"),  // C1 CSI
                                 std::string("\xe2\x80\xae"),                    // RLO
                                 std::string("\xff"), std::string("\xc0\x80"),   // overlong
                                 std::string(kMaxNameBytes + 1, 'a'), std::string()}) {
    absl::Status st = CheckName("worker name", bad, false);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << Printable(bad);
    EXPECT_NE(st.message().find("worker name: "), std::string::npos) << st;
    EXPECT_NE(st.message().find("names are 1..128 bytes"), std::string::npos) << st;
    EXPECT_EQ(st.message().find('\n'), std::string::npos) << "the message itself is escaped";
  }
}

TEST(Printable, EscapesEverythingThatCouldForgeALineOrEscape) {
  EXPECT_EQ(Printable("plain name"), "plain name");
  EXPECT_EQ(Printable("日本"), "日本");
  EXPECT_EQ(Printable("a\nj-000001  RUNNING"), "a\\nj-000001  RUNNING");
  EXPECT_EQ(Printable("\x1b[2J"), "\\x1b[2J");
  EXPECT_EQ(Printable("back\\slash\t"), "back\\\\slash\\t");
  EXPECT_EQ(Printable("\xe2\x80\xae"), "\\xe2\\x80\\xae");
  EXPECT_EQ(Printable("\xff"), "\\xff");
  EXPECT_EQ(Printable(std::string(1000, 'x'), 10), std::string(10, 'x') + "...");
  EXPECT_EQ(Printable("ab日", 4), "ab...");  // never cuts a character in half
}

}  // namespace
}  // namespace tern
