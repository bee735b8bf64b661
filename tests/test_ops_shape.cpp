// Shape ops (reshape, transpose, concat, slice, select, expand, stack) and reductions
// (sum, mean, masked_mean): forward values and gradients.
#include <doctest/doctest.h>

#include <cmath>

#include "gradcheck.hpp"
#include "rechub/ops/reduce.hpp"
#include "rechub/ops/shape.hpp"

using namespace rechub;
using testing::check_gradients;
using testing::random_tensor;

namespace {
Tensor iota(const Shape& s) {
  Tensor t = Tensor::empty(s);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = static_cast<float>(i);
  return t;
}
}  // namespace

TEST_CASE("reshape and unsqueeze are views with pass-through gradients") {
  Rng rng(1);
  Tensor x = iota({2, 6});
  Var v = constant(x);
  Var r = reshape(v, {3, 4});
  CHECK(r.shape() == Shape{3, 4});
  CHECK(r.value().raw() == x.raw());
  Var u = unsqueeze(v, 1);
  CHECK(u.shape() == Shape{2, 1, 6});
  CHECK(unsqueeze(v, -1).shape() == Shape{2, 6, 1});
  CHECK(unsqueeze(v, 0).shape() == Shape{1, 2, 6});
  CHECK_THROWS_WITH_AS(reshape(v, {5, 2}), "reshape: cannot view [2, 6] as [5, 2]", ShapeError);
  end_step();
  check_gradients([](const std::vector<Var>& v) { return reshape(v[0], {4, 3}); }, {random_tensor({2, 6}, rng)});
  check_gradients([](const std::vector<Var>& v) { return unsqueeze(v[0], 1); }, {random_tensor({2, 3}, rng)});
  check_gradients(
      [](const std::vector<Var>& v) {
        return concat({reshape(v[0], {3, 2}), reshape(v[0], {3, 2})}, 1);
      },
      {random_tensor({2, 3}, rng)});
}

TEST_CASE("transpose swaps dims, 2-d to 4-d, and its gradient") {
  Rng rng(2);
  Var t = transpose(constant(iota({2, 3})), 0, 1);
  REQUIRE(t.shape() == Shape{3, 2});
  const float want[] = {0, 3, 1, 4, 2, 5};
  for (int i = 0; i < 6; ++i) CHECK(t.value().f32()[i] == want[i]);
  // [2, 3, 4] with dims 0 and 2 swapped: y[k, j, i] = x[i, j, k].
  Var t3 = transpose(constant(iota({2, 3, 4})), 0, -1);
  REQUIRE(t3.shape() == Shape{4, 3, 2});
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) CHECK(t3.value().f32()[(k * 3 + j) * 2 + i] == float((i * 3 + j) * 4 + k));
  CHECK_THROWS_WITH_AS(transpose(constant(iota({2, 3})), 0, 2), "transpose: dim 2 out of range for [2, 3]", ShapeError);
  end_step();
  check_gradients([](const std::vector<Var>& v) { return transpose(v[0], 1, 2); }, {random_tensor({2, 3, 4}, rng)});
  check_gradients([](const std::vector<Var>& v) { return transpose(v[0], 1, 3); }, {random_tensor({2, 2, 3, 4}, rng)});
  check_gradients(
      [](const std::vector<Var>& v) {
        return concat({transpose(v[0], 0, 1), transpose(v[0], 0, 1)}, 0);
      },
      {random_tensor({3, 3}, rng)});
}

TEST_CASE("concat of 3 inputs, along inner and outer dims, and a tree of 11 inputs") {
  Rng rng(3);
  Var a = constant(iota({2, 1})), b = constant(iota({2, 2})), c = constant(iota({2, 3}));
  Var y = concat({a, b, c}, 1);
  REQUIRE(y.shape() == Shape{2, 6});
  const float want[] = {0, 0, 1, 0, 1, 2, 1, 2, 3, 3, 4, 5};
  for (int i = 0; i < 12; ++i) CHECK(y.value().f32()[i] == want[i]);
  CHECK(concat({a, b, c}, -1).shape() == Shape{2, 6});
  CHECK_THROWS_WITH_AS(concat({a, constant(iota({3, 2}))}, 1),
                       "concat: input 1 has shape [3, 2], input 0 has [2, 1] (only dim 1 may differ)", ShapeError);
  // 11 inputs go through a tree of concat nodes; values stay in order.
  std::vector<Var> many;
  for (int i = 0; i < 11; ++i) many.push_back(constant(Tensor::full({2, 1}, float(i))));
  Var m = concat(many.data(), 11, 1);
  REQUIRE(m.shape() == Shape{2, 11});
  for (int r = 0; r < 2; ++r)
    for (int i = 0; i < 11; ++i) CHECK(m.value().f32()[r * 11 + i] == float(i));
  end_step();

  check_gradients(
      [](const std::vector<Var>& v) {
        return concat({v[0], v[1], v[2]}, 1);
      },
      {random_tensor({2, 2, 3}, rng), random_tensor({2, 1, 3}, rng), random_tensor({2, 4, 3}, rng)});
  check_gradients(
      [](const std::vector<Var>& v) {
        return concat({v[0], v[1], v[2]}, 0);
      },
      {random_tensor({1, 3}, rng), random_tensor({2, 3}, rng), random_tensor({3, 3}, rng)});
  std::vector<Tensor> ins;
  for (int i = 0; i < 10; ++i) ins.push_back(random_tensor({2, i % 3 + 1}, rng));
  check_gradients([](const std::vector<Var>& v) { return concat(v.data(), static_cast<int>(v.size()), 1); }, ins);
  // The same input twice receives both gradients.
  check_gradients(
      [](const std::vector<Var>& v) {
        return concat({v[0], v[1], v[0]}, 1);
      },
      {random_tensor({2, 2}, rng), random_tensor({2, 3}, rng)});
}

TEST_CASE("stack adds a dim") {
  Rng rng(4);
  Var s = stack({constant(iota({2, 3})), constant(iota({2, 3}))}, 1);
  REQUIRE(s.shape() == Shape{2, 2, 3});
  CHECK(s.value().f32()[3] == 0.0f);
  CHECK(s.value().f32()[6] == 3.0f);
  CHECK(stack({constant(iota({2, 3})), constant(iota({2, 3}))}, -1).shape() == Shape{2, 3, 2});
  end_step();
  check_gradients(
      [](const std::vector<Var>& v) {
        return stack({v[0], v[1]}, 0);
      },
      {random_tensor({2, 3}, rng), random_tensor({2, 3}, rng)});
}

TEST_CASE("slice and select along any dim") {
  Rng rng(5);
  Var x = constant(iota({2, 4, 3}));
  Var s = slice(x, 1, 1, 3);
  REQUIRE(s.shape() == Shape{2, 2, 3});
  CHECK(s.value().f32()[0] == 3.0f);
  CHECK(s.value().f32()[6] == 15.0f);
  Var e = select(x, 1, 2);
  REQUIRE(e.shape() == Shape{2, 3});
  CHECK(e.value().f32()[0] == 6.0f);
  CHECK(e.value().f32()[3] == 18.0f);
  CHECK(select(x, -1, 0).shape() == Shape{2, 4});
  CHECK(select(constant(iota({5})), 0, 3).shape() == Shape{1});
  CHECK(select(constant(iota({5})), 0, 3).value().f32()[0] == 3.0f);
  CHECK(slice(x, 0, 1, 1).shape() == Shape{0, 4, 3});
  CHECK_THROWS_WITH_AS(slice(x, 1, 2, 5), "slice: [2, 5) out of range for dim 1 of [2, 4, 3]", ShapeError);
  CHECK_THROWS_WITH_AS(select(x, 2, 3), "select: index 3 out of range for dim 2 of [2, 4, 3]", ShapeError);
  end_step();
  check_gradients([](const std::vector<Var>& v) { return slice(v[0], 1, 1, 3); }, {random_tensor({2, 4, 3}, rng)});
  check_gradients([](const std::vector<Var>& v) { return slice(v[0], 2, 0, 2); }, {random_tensor({2, 4, 3}, rng)});
  check_gradients([](const std::vector<Var>& v) { return select(v[0], 0, 1); }, {random_tensor({3, 4}, rng)});
  check_gradients([](const std::vector<Var>& v) { return select(v[0], 1, 2); }, {random_tensor({2, 4, 3}, rng)});
  // Overlapping uses of one input accumulate.
  check_gradients(
      [](const std::vector<Var>& v) {
        return concat({slice(v[0], 1, 0, 3), slice(v[0], 1, 1, 4)}, 1);
      },
      {random_tensor({2, 4, 3}, rng)});
  check_gradients(
      [](const std::vector<Var>& v) {
        return concat({select(v[0], 0, 1), select(v[0], 0, 1)}, 0);
      },
      {random_tensor({3, 4}, rng)});
}

TEST_CASE("expand repeats along a new dim and sums gradients back") {
  Rng rng(6);
  Var u = expand(constant(iota({2, 3})), 1, 4);
  REQUIRE(u.shape() == Shape{2, 4, 3});
  for (int b = 0; b < 2; ++b)
    for (int k = 0; k < 4; ++k)
      for (int d = 0; d < 3; ++d) CHECK(u.value().f32()[(b * 4 + k) * 3 + d] == float(b * 3 + d));
  CHECK(expand(constant(iota({2, 3})), 0, 5).shape() == Shape{5, 2, 3});
  CHECK(expand(constant(iota({2, 3})), -1, 5).shape() == Shape{2, 3, 5});
  Var rr = repeat_rows(constant(iota({2, 3})), 2);
  REQUIRE(rr.shape() == Shape{4, 3});
  CHECK(rr.value().f32()[3] == 0.0f);
  CHECK(rr.value().f32()[6] == 3.0f);
  end_step();
  check_gradients([](const std::vector<Var>& v) { return expand(v[0], 1, 4); }, {random_tensor({2, 3}, rng)});
  check_gradients([](const std::vector<Var>& v) { return expand(v[0], 2, 3); }, {random_tensor({2, 3}, rng)});
  check_gradients([](const std::vector<Var>& v) { return repeat_rows(v[0], 3); }, {random_tensor({2, 2}, rng)});
  check_gradients(
      [](const std::vector<Var>& v) {
        return concat({expand(v[0], 1, 2), expand(v[0], 1, 3)}, 1);
      },
      {random_tensor({2, 3}, rng)});
}

TEST_CASE("sum and mean over everything and over one dim") {
  Rng rng(7);
  Var x = constant(iota({2, 3, 4}));
  CHECK(sum(x).shape() == Shape{1});
  CHECK(sum(x).item() == 276.0f);
  CHECK(mean(x).item() == 11.5f);
  Var s1 = sum(x, 1);
  REQUIRE(s1.shape() == Shape{2, 4});
  CHECK(s1.value().f32()[0] == 0.0f + 4 + 8);
  CHECK(s1.value().f32()[7] == 15.0f + 19 + 23);
  CHECK(sum(x, 1, true).shape() == Shape{2, 1, 4});
  CHECK(sum(x, -1).shape() == Shape{2, 3});
  CHECK(mean(x, 2).value().f32()[0] == 1.5f);
  CHECK(sum(constant(iota({4})), 0).shape() == Shape{1});
  CHECK_THROWS_WITH_AS(sum(x, 3), "sum: dim 3 out of range for [2, 3, 4]", ShapeError);
  end_step();
  check_gradients([](const std::vector<Var>& v) { return sum(v[0]); }, {random_tensor({3, 4}, rng)});
  check_gradients([](const std::vector<Var>& v) { return mean(v[0]); }, {random_tensor({3, 4}, rng)});
  for (int d = 0; d < 3; ++d)
    for (int keep = 0; keep < 2; ++keep) {
      check_gradients([&](const std::vector<Var>& v) { return sum(v[0], d, keep); }, {random_tensor({2, 3, 4}, rng)});
      check_gradients([&](const std::vector<Var>& v) { return mean(v[0], d, keep); }, {random_tensor({2, 3, 4}, rng)});
      check_gradients(
          [](const std::vector<Var>& v) {
            return concat({sum(v[0]), mean(v[0]), sum(v[0], 0)}, 0);
          },
          {random_tensor({3, 4}, rng)});
    }
}

TEST_CASE("masked_mean averages valid positions; an all-padding row gives zeros and no NaN") {
  Rng rng(8);
  const std::int32_t m[] = {1, 1, 0, 0,  //
                            0, 0, 0, 0,  //
                            1, 0, 1, 1};
  Tensor mask = Tensor::from_vector({3, 4}, m);
  Tensor xt = random_tensor({3, 4, 2}, rng);
  Var y = masked_mean(constant(xt), mask);
  REQUIRE(y.shape() == Shape{3, 2});
  const float* X = xt.f32();
  for (int d = 0; d < 2; ++d) {
    CHECK(y.value().f32()[d] == doctest::Approx((X[0 * 2 + d] + X[1 * 2 + d]) / 2).epsilon(1e-6));
    CHECK(y.value().f32()[2 + d] == 0.0f);
    CHECK(y.value().f32()[4 + d] == doctest::Approx((X[8 * 2 + d] + X[10 * 2 + d] + X[11 * 2 + d]) / 3).epsilon(1e-6));
  }
  CHECK_THROWS_WITH_AS(masked_mean(constant(xt), Tensor::zeros({3, 5}, DType::i32)),
                       "masked_mean: x [3, 4, 2] and mask [3, 5] do not match (expects x [B, L, D] and mask [B, L])",
                       ShapeError);
  end_step();
  check_gradients([&](const std::vector<Var>& v) { return masked_mean(v[0], mask); }, {xt});
  check_gradients(
      [&](const std::vector<Var>& v) {
        return concat({masked_mean(v[0], mask), masked_mean(v[0], mask)}, 1);
      },
      {xt});
  // Gradient of the all-padding row and of padded positions is exactly zero.
  Parameter p(xt.clone());
  tape().backward(masked_mean(p.var(), mask), Tensor::full({3, 2}, 1.0f));
  end_step();
  for (int l = 0; l < 4; ++l)
    for (int d = 0; d < 2; ++d) {
      CHECK(p.grad().f32()[(4 + l) * 2 + d] == 0.0f);
      CHECK(p.grad().f32()[(0 + l) * 2 + d] == (m[l] ? 0.5f : 0.0f));
    }
}
