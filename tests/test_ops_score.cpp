// Fused matching scores: values and gradients.
#include <doctest/doctest.h>

#include "gradcheck.hpp"
#include "rechub/ops/score.hpp"

using namespace rechub;

TEST_CASE("row_dot and group_dot values") {
  float u[] = {1, 2, 3, 4};
  float v[] = {1, 0, -1, 2};
  Var s = row_dot(constant(Tensor::from_vector({2, 2}, u)), constant(Tensor::from_vector({2, 2}, v)), 0.5f);
  CHECK(s.value().f32()[0] == doctest::Approx(0.5));
  CHECK(s.value().f32()[1] == doctest::Approx(2.5));
  float w[] = {1, 1, 2, 0, 0, 1, 1, 1};  // [2, 2, 2]
  Var g = group_dot(constant(Tensor::from_vector({2, 2}, u)), constant(Tensor::from_vector({2, 2, 2}, w)));
  CHECK(g.shape() == Shape{2, 2});
  CHECK(g.value().f32()[0] == doctest::Approx(3));
  CHECK(g.value().f32()[1] == doctest::Approx(2));
  CHECK(g.value().f32()[2] == doctest::Approx(4));
  CHECK(g.value().f32()[3] == doctest::Approx(7));
  CHECK_THROWS_WITH_AS(group_dot(constant(Tensor::zeros({2, 3})), constant(Tensor::zeros({2, 4, 2}))),
                       "group_dot: expects u [B, D] and v [B, K, D], got [2, 3] and [2, 4, 2]", ShapeError);
  end_step();
}

TEST_CASE("row_dot and group_dot gradients") {
  Rng rng(11);
  testing::check_gradients([](const std::vector<Var>& v) { return row_dot(v[0], v[1], 2.0f); },
                           {testing::random_tensor({3, 5}, rng), testing::random_tensor({3, 5}, rng)});
  testing::check_gradients([](const std::vector<Var>& v) { return group_dot(v[0], v[1], 0.5f); },
                           {testing::random_tensor({3, 4}, rng), testing::random_tensor({3, 2, 4}, rng)});
}
