#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/kernels/cpu/kernel_test_util.h"

namespace tern::kernels {
namespace {

using testing::CheckGradient;
using testing::Dot;
using testing::ExpectClose;
using testing::RandomVec;
using testing::ToFloat;

constexpr float kTheta = 10000.0f;

// HF apply_rotary_pos_emb on one head vector: x*cos + rotate_half(x)*sin, with cos/sin
// duplicated over both halves.
void RefRotate(double* x, double t, int HS) {
  const int half = HS / 2;
  std::vector<double> y(HS);
  for (int i = 0; i < HS; ++i) {
    const int fi = i % half;
    const double ang = t * std::pow(static_cast<double>(kTheta), -2.0 * fi / HS);
    const double rot = i < half ? -x[i + half] : x[i - half];
    y[i] = x[i] * std::cos(ang) + rot * std::sin(ang);
  }
  for (int i = 0; i < HS; ++i) x[i] = y[i];
}

struct Shape {
  int B = 2, T = 7, NH = 4, NKV = 2, HS = 6;
  int QKV() const { return (NH + 2 * NKV) * HS; }
  size_t Size() const { return static_cast<size_t>(B) * T * QKV(); }
};

TEST(RopeTest, TablesMatchFormula) {
  const int T = 9, HS = 8;
  std::vector<float> cos(T * HS / 2), sin(T * HS / 2);
  rope_tables(cos.data(), sin.data(), T, HS, kTheta);
  std::vector<double> want_cos(cos.size()), want_sin(sin.size());
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < HS / 2; ++i) {
      const double ang = t * std::pow(10000.0, -2.0 * i / HS);
      want_cos[t * HS / 2 + i] = std::cos(ang);
      want_sin[t * HS / 2 + i] = std::sin(ang);
    }
  ExpectClose(cos, want_cos, 1e-7, "cos");
  ExpectClose(sin, want_sin, 1e-7, "sin");
}

TEST(RopeTest, ForwardMatchesReferenceAndLeavesValuesAlone) {
  const Shape s;
  const auto qkv = RandomVec(s.Size(), 1);
  std::vector<double> want = qkv;
  for (int n = 0; n < s.B * s.T; ++n)
    for (int h = 0; h < s.NH + s.NKV; ++h)  // q and k heads only
      RefRotate(&want[static_cast<size_t>(n) * s.QKV() + h * s.HS], n % s.T, s.HS);
  std::vector<float> cos(s.T * s.HS / 2), sin(s.T * s.HS / 2);
  rope_tables(cos.data(), sin.data(), s.T, s.HS, kTheta);
  auto f = ToFloat(qkv);
  rope_forward(f.data(), cos.data(), sin.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  ExpectClose(f, want, 1e-6, "rope qkv");  // includes v heads: must be bit-unchanged
}

TEST(RopeTest, BackwardIsExactAdjoint) {
  const Shape s;
  const auto x = RandomVec(s.Size(), 2), y = RandomVec(s.Size(), 3);
  std::vector<double> cos(s.T * s.HS / 2), sin(s.T * s.HS / 2);
  rope_tables(cos.data(), sin.data(), s.T, s.HS, kTheta);
  auto rx = x, ry = y;
  rope_forward(rx.data(), cos.data(), sin.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  rope_backward(ry.data(), cos.data(), sin.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  // <R x, y> == <x, R^T y>
  EXPECT_NEAR(Dot(rx, y), Dot(x, ry), 1e-12 * s.Size());
  // And R^T R = I (orthogonal): backward undoes forward.
  rope_backward(rx.data(), cos.data(), sin.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  ExpectClose(rx, x, 1e-12, "R^T R x");
}

TEST(RopeTest, GradientMatchesFiniteDifferences) {
  const Shape s{1, 5, 2, 1, 4};
  auto x = RandomVec(s.Size(), 4);
  const auto dout = RandomVec(s.Size(), 5);
  std::vector<double> cos(s.T * s.HS / 2), sin(s.T * s.HS / 2), y(s.Size());
  rope_tables(cos.data(), sin.data(), s.T, s.HS, kTheta);
  auto loss = [&] {
    y = x;
    rope_forward(y.data(), cos.data(), sin.data(), s.B, s.T, s.NH, s.NKV, s.HS);
    return Dot(y, dout);
  };
  auto dx = dout;
  rope_backward(dx.data(), cos.data(), sin.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  CheckGradient(&x, dx, loss, "rope dqkv");
}

// Explicit positions (a permuted chunk, an offset chunk): each token rotated by its own
// position's angle; backward with the same positions inverts it.
TEST(RopeTest, ExplicitPositionsRotateEachTokenByItsPosition) {
  const Shape s;
  const int max_pos = 40;
  const auto qkv = RandomVec(s.Size(), 5);
  std::vector<int32_t> pos(static_cast<size_t>(s.B) * s.T);
  for (size_t n = 0; n < pos.size(); ++n) pos[n] = static_cast<int32_t>((n * 11 + 3) % max_pos);
  std::vector<double> want = qkv;
  for (int n = 0; n < s.B * s.T; ++n)
    for (int h = 0; h < s.NH + s.NKV; ++h)
      RefRotate(&want[static_cast<size_t>(n) * s.QKV() + h * s.HS], pos[n], s.HS);
  std::vector<double> cos(max_pos * s.HS / 2), sin(max_pos * s.HS / 2);
  rope_tables(cos.data(), sin.data(), max_pos, s.HS, kTheta);
  auto x = qkv;
  rope_forward(x.data(), cos.data(), sin.data(), s.B, s.T, s.NH, s.NKV, s.HS, pos.data());
  ExpectClose(x, want, 1e-12, "rope with positions");
  rope_backward(x.data(), cos.data(), sin.data(), s.B, s.T, s.NH, s.NKV, s.HS, pos.data());
  ExpectClose(x, qkv, 1e-12, "inverse rotation");
  // Positions 0..T-1 are the default.
  std::vector<int32_t> ident(pos.size());
  for (size_t n = 0; n < ident.size(); ++n) ident[n] = static_cast<int32_t>(n % s.T);
  auto a = qkv, b = qkv;
  rope_forward(a.data(), cos.data(), sin.data(), s.B, s.T, s.NH, s.NKV, s.HS, ident.data());
  rope_forward(b.data(), cos.data(), sin.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  EXPECT_EQ(a, b);
}

// Ms-PoE's per-head scaling: head h of sequence b rotates by the angle of position p / r where
// r is the ratio of its table; every element checked against the plain loop (v heads unchanged).
TEST(RopeTest, PerHeadTablesRotateEachHeadByItsScaledPosition) {
  const Shape s;
  const int rows = 40, tables = 3, heads = s.NH + s.NKV, half = s.HS / 2;
  const double ratio[tables] = {1.0, 1.3, 1.75};
  std::vector<double> cos(size_t(tables) * rows * half), sin(cos.size());
  for (int k = 0; k < tables; ++k)
    for (int t = 0; t < rows; ++t)
      for (int i = 0; i < half; ++i) {
        const double a = (t / ratio[k]) * std::pow(double(kTheta), -2.0 * i / s.HS);
        cos[(size_t(k) * rows + t) * half + i] = std::cos(a);
        sin[(size_t(k) * rows + t) * half + i] = std::sin(a);
      }
  std::vector<int32_t> head_table(size_t(s.B) * heads), pos(size_t(s.B) * s.T);
  for (size_t i = 0; i < head_table.size(); ++i) head_table[i] = int32_t((i * 7 + 1) % tables);
  for (size_t n = 0; n < pos.size(); ++n) pos[n] = int32_t((n * 11 + 3) % rows);
  const auto qkv = RandomVec(s.Size(), 9);
  for (const bool with_pos : {false, true}) {
    std::vector<double> want = qkv;
    for (int n = 0; n < s.B * s.T; ++n)
      for (int h = 0; h < heads; ++h) {
        const int p = with_pos ? pos[n] : n % s.T;
        const double r = ratio[head_table[size_t(n / s.T) * heads + h]];
        RefRotate(&want[size_t(n) * s.QKV() + h * s.HS], p / r, s.HS);
      }
    auto x = qkv;
    rope_forward_heads(x.data(), cos.data(), sin.data(), rows, head_table.data(), s.B, s.T, s.NH,
                       s.NKV, s.HS, with_pos ? pos.data() : nullptr);
    ExpectClose(x, want, 1e-12, "per-head rope");
  }
  // Every head on the plain table: bit-identical to rope_forward.
  std::vector<double> plain(size_t(rows) * half), plain_s(plain.size());
  rope_tables(plain.data(), plain_s.data(), rows, s.HS, kTheta);
  std::vector<int32_t> zeros(head_table.size(), 0);
  auto a = qkv, b = qkv;
  rope_forward_heads(a.data(), plain.data(), plain_s.data(), rows, zeros.data(), s.B, s.T, s.NH,
                     s.NKV, s.HS, pos.data());
  rope_forward(b.data(), plain.data(), plain_s.data(), s.B, s.T, s.NH, s.NKV, s.HS, pos.data());
  EXPECT_EQ(a, b);
}

}  // namespace
}  // namespace tern::kernels
