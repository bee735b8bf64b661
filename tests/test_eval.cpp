// Evaluation: top-K metrics against hand-computed values and Torch-RecHub's own example.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "rechub/eval/metrics.hpp"

using namespace rechub;

namespace {
// 1 / log2(j + 2): the DCG discount of 0-based rank j.
double disc(int j) { return 1.0 / std::log2(j + 2.0); }
}  // namespace

TEST_CASE("topk_metrics matches hand-computed values on four users") {
  // User 3 has no ground truth: it adds nothing but still counts in the user denominator (4),
  // while Hit divides by the 6 ground-truth items.
  std::vector<std::vector<int>> truth = {{1, 2}, {5}, {9, 10, 11}, {}};
  std::vector<std::vector<int>> pred = {{3, 1, 2, 4}, {5, 6, 7, 8}, {12, 13, 14, 9}, {1, 2, 3, 4}};
  MetricMap m = topk_metrics(truth, pred, {2, 3, 4});
  CHECK(m.size() == 15);

  // K = 2. User 0 hits at rank 1, user 1 at rank 0, user 2 misses.
  const double idcg2 = disc(0) + disc(1);  // users with >= 2 truth items
  CHECK(m["Hit@2"] == doctest::Approx(2.0 / 6).epsilon(1e-15));
  CHECK(m["MRR@2"] == doctest::Approx((0.5 + 1.0) / 4).epsilon(1e-15));
  CHECK(m["Recall@2"] == doctest::Approx((0.5 + 1.0) / 4).epsilon(1e-15));
  CHECK(m["Precision@2"] == doctest::Approx((0.5 + 0.5) / 4).epsilon(1e-15));
  CHECK(m["NDCG@2"] == doctest::Approx((disc(1) / idcg2 + 1.0) / 4).epsilon(1e-15));

  // K = 3. User 0 also hits at rank 2 (its IDCG stops at |G| = 2 terms).
  CHECK(m["Hit@3"] == doctest::Approx(3.0 / 6).epsilon(1e-15));
  CHECK(m["MRR@3"] == doctest::Approx(1.5 / 4).epsilon(1e-15));
  CHECK(m["Recall@3"] == doctest::Approx((1.0 + 1.0) / 4).epsilon(1e-15));
  CHECK(m["Precision@3"] == doctest::Approx((2.0 / 3 + 1.0 / 3) / 4).epsilon(1e-15));
  CHECK(m["NDCG@3"] == doctest::Approx(((disc(1) + disc(2)) / idcg2 + 1.0) / 4).epsilon(1e-15));

  // K = 4. User 2 hits at rank 3; its IDCG has 3 terms.
  const double idcg3 = disc(0) + disc(1) + disc(2);
  CHECK(m["Hit@4"] == doctest::Approx(4.0 / 6).epsilon(1e-15));
  CHECK(m["MRR@4"] == doctest::Approx((0.5 + 1.0 + 0.25) / 4).epsilon(1e-15));
  CHECK(m["Recall@4"] == doctest::Approx((1.0 + 1.0 + 1.0 / 3) / 4).epsilon(1e-15));
  CHECK(m["Precision@4"] == doctest::Approx((0.5 + 0.25 + 0.25) / 4).epsilon(1e-15));
  CHECK(m["NDCG@4"] == doctest::Approx(((disc(1) + disc(2)) / idcg2 + 1.0 + disc(3) / idcg3) / 4).epsilon(1e-15));
}

TEST_CASE("topk_metrics reproduces Torch-RecHub's own example output") {
  // torch_rechub/basic/metric.py __main__: y_pred = {'0': [0, 1], '1': [0, 1], '2': [2, 3]},
  // y_true = {'0': [1, 2], '1': [0, 1, 2], '2': [2, 3]}, topKs = (1, 2).
  std::vector<std::vector<std::int64_t>> truth = {{1, 2}, {0, 1, 2}, {2, 3}};
  std::vector<std::vector<std::int64_t>> pred = {{0, 1}, {0, 1}, {2, 3}};
  MetricMap m = topk_metrics(truth, pred, {1, 2});
  CHECK(m["Hit@1"] == doctest::Approx(2.0 / 7).epsilon(1e-15));
  CHECK(m["Recall@1"] == doctest::Approx((0.0 + 1.0 / 3 + 0.5) / 3).epsilon(1e-15));
  CHECK(m["NDCG@2"] == doctest::Approx((disc(1) / (disc(0) + disc(1)) + 1.0 + 1.0) / 3).epsilon(1e-15));
  CHECK(format_topk_metrics(m, {1, 2}) ==
        "NDCG@1: 0.6667, NDCG@2: 0.7956\n"
        "MRR@1: 0.6667, MRR@2: 0.8333\n"
        "Recall@1: 0.2778, Recall@2: 0.7222\n"
        "Hit@1: 0.2857, Hit@2: 0.7143\n"
        "Precision@1: 0.6667, Precision@2: 0.8333\n");
}

TEST_CASE("topk_metrics counts repeated predictions and ground-truth duplicates like the Python loop") {
  // A prediction listed twice is a hit twice; a duplicate truth item counts twice in |G|.
  std::vector<std::vector<int>> truth = {{7, 7}};
  std::vector<std::vector<int>> pred = {{7, 7, 1}};
  MetricMap m = topk_metrics(truth, pred, {3});
  CHECK(m["Hit@3"] == 1.0);  // 2 hits / 2 truth items
  CHECK(m["Recall@3"] == 1.0);
  CHECK(m["Precision@3"] == doctest::Approx(2.0 / 3).epsilon(1e-15));
  CHECK(m["MRR@3"] == 1.0);
  CHECK(m["NDCG@3"] == 1.0);
}

TEST_CASE("topk_metrics takes an index's int32 id matrix") {
  std::vector<std::int32_t> ids = {3, 1, 2, 5, 6, 7};
  Tensor t = Tensor::from_vector({2, 3}, ids.data());
  std::vector<std::vector<std::int32_t>> truth = {{1}, {9}};
  MetricMap m = topk_metrics(truth, t, {2});
  CHECK(m["Hit@2"] == 0.5);
  CHECK(m["MRR@2"] == 0.25);
  CHECK_THROWS_WITH_AS(topk_metrics(truth, Tensor::zeros({2, 3}), {2}),
                       "topk_metrics: predictions must be an int32 [U, K] tensor, got [2, 3] float32", ShapeError);
}

TEST_CASE("topk_metrics rejects inconsistent input") {
  std::vector<std::vector<int>> truth = {{1}, {2}};
  std::vector<std::vector<int>> pred = {{1, 2}, {2}};
  CHECK_THROWS_WITH_AS(topk_metrics(truth, pred, {2}), "topk_metrics: user 1 has 1 predictions, K = 2 needs at least 2",
                       DataError);
  CHECK_THROWS_WITH_AS(topk_metrics(truth, std::vector<std::vector<int>>{{1}}, {1}),
                       "topk_metrics: 2 ground-truth lists but 1 prediction lists", DataError);
  CHECK_THROWS_WITH_AS(topk_metrics(truth, pred, {0}), "topk_metrics: K must be >= 1, got 0", ConfigError);
  CHECK_THROWS_WITH_AS(topk_metrics(std::vector<std::vector<int>>{{}}, std::vector<std::vector<int>>{{1}}, {1}),
                       "topk_metrics: every ground-truth list is empty", DataError);
}

TEST_CASE("round_half_even rounds like Python's round") {
  CHECK(round_half_even(0.12345, 4) == 0.1235);  // binary value lies just above the tie
  CHECK(round_half_even(2.675, 2) == 2.67);      // binary value lies just below the tie
  CHECK(round_half_even(0.125, 2) == 0.12);      // exact tie: to even
  CHECK(round_half_even(0.375, 2) == 0.38);
  CHECK(round_half_even(1.0 / 3) == 0.3333);
}
