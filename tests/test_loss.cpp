// Losses: BCE (probabilities and logits), BPR, hinge, softmax cross-entropy (list-wise), in-batch
// softmax (log-Q correction, accidental hits) and YoutubeSBC's cyclic in-batch softmax.
// Values are checked against numbers worked out by hand or by a naive double-precision reference
// written from the formulas (for the cyclic loss, from Torch-RecHub's own construction: full
// B x B cosine matrix, column correction, index gather); gradients against finite differences.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "gradcheck.hpp"
#include "rechub/loss/bce.hpp"
#include "rechub/loss/inbatch.hpp"
#include "rechub/loss/pairwise.hpp"
#include "rechub/loss/softmax_ce.hpp"

using namespace rechub;

namespace {

Tensor vec(std::initializer_list<float> v) { return Tensor::from_vector({static_cast<std::int64_t>(v.size())}, v.begin()); }
Tensor mat(std::int64_t r, std::int64_t c, std::initializer_list<float> v) {
  REQUIRE(static_cast<std::int64_t>(v.size()) == r * c);
  return Tensor::from_vector({r, c}, v.begin());
}
Tensor ivec(std::initializer_list<std::int32_t> v) {
  return Tensor::from_vector({static_cast<std::int64_t>(v.size())}, v.begin());
}
double softplus(double x) { return std::log1p(std::exp(-std::fabs(x))) + std::max(x, 0.0); }

// Loss value and, when requested, the gradient of every input (the loss seeded with 1).
float loss_value(const Var& loss) {
  REQUIRE(loss.shape() == Shape{1});
  return loss.item();
}

// Naive in-batch softmax: logits z_ij = u_i.v_j / T - log_q[j], masked accidental hits.
double ref_inbatch(const Tensor& U, const Tensor& V, double T, const float* log_q, const std::int32_t* ids) {
  const std::int64_t B = U.dim(0), D = U.dim(1);
  double total = 0;
  for (std::int64_t i = 0; i < B; ++i) {
    std::vector<double> z(B);
    double m = -1e300;
    for (std::int64_t j = 0; j < B; ++j) {
      double s = 0;
      for (std::int64_t d = 0; d < D; ++d) s += double(U.f32()[i * D + d]) * V.f32()[j * D + d];
      z[j] = s / T - (log_q ? log_q[j] : 0.0);
      if (ids && j != i && ids[j] == ids[i]) z[j] = -INFINITY;
      m = std::max(m, z[j]);
    }
    double se = 0;
    for (double x : z) se += std::exp(x - m);
    total += m + std::log(se) - z[i];
  }
  return total / B;
}

// Torch-RecHub YoutubeSBC, step by step: pred = cosine(u_i, v_j) for all i, j; scores = pred -
// log(w) broadcast over columns; gather with index0 = repeat(arange(B), n+1) and
// index1 = [i, i+1, .., i+n] wrapped at B; divide by T; CrossEntropyLoss with target 0.
double ref_youtube_sbc(const Tensor& U, const Tensor& V, int n_neg, double T, const float* log_w_or_null, bool cosine) {
  const std::int64_t B = U.dim(0), D = U.dim(1);
  std::vector<double> scores(B * B);
  for (std::int64_t i = 0; i < B; ++i)
    for (std::int64_t j = 0; j < B; ++j) {
      double dot = 0, nu = 0, nv = 0;
      for (std::int64_t d = 0; d < D; ++d) {
        dot += double(U.f32()[i * D + d]) * V.f32()[j * D + d];
        nu += double(U.f32()[i * D + d]) * U.f32()[i * D + d];
        nv += double(V.f32()[j * D + d]) * V.f32()[j * D + d];
      }
      const double pred = cosine ? dot / (std::max(std::sqrt(nu), 1e-8) * std::max(std::sqrt(nv), 1e-8)) : dot;
      scores[i * B + j] = pred - (log_w_or_null ? log_w_or_null[j] : 0.0);
    }
  std::vector<std::int64_t> index0, index1;
  for (std::int64_t i = 0; i < B; ++i)
    for (int k = 0; k <= n_neg; ++k) {
      index0.push_back(i);
      std::int64_t c = i + k;
      while (c >= B) c -= B;
      index1.push_back(c);
    }
  double total = 0;
  for (std::int64_t i = 0; i < B; ++i) {
    std::vector<double> z;
    for (int k = 0; k <= n_neg; ++k) {
      const std::size_t at = static_cast<std::size_t>(i * (n_neg + 1) + k);
      z.push_back(scores[index0[at] * B + index1[at]] / T);
    }
    double m = z[0], se = 0;
    for (double x : z) m = std::max(m, x);
    for (double x : z) se += std::exp(x - m);
    total += m + std::log(se) - z[0];
  }
  return total / B;
}

}  // namespace

TEST_CASE("bce matches torch BCELoss, clamps at 0 and 1, and has torch's gradient") {
  // -(ln 0.8 + ln 0.7) / 2
  CHECK(loss_value(bce(constant(vec({0.8f, 0.3f})), vec({1, 0}))) == doctest::Approx(0.2899092476).epsilon(1e-6));
  // [N, 1] probabilities and soft labels: -(0.25 ln 0.6 + 0.75 ln 0.4)
  CHECK(loss_value(bce(constant(mat(1, 1, {0.6f})), vec({0.25f}))) ==
        doctest::Approx(-(0.25 * std::log(0.6) + 0.75 * std::log(0.4))).epsilon(1e-6));
  end_step();

  // log(0) is clamped to -100: wrong-side certainties cost 100 each, right-side ones 0.
  Parameter p(vec({0.0f, 1.0f, 0.0f, 1.0f}));
  Var l = bce(p, vec({1, 0, 0, 1}));
  CHECK(l.item() == 50.0f);
  backward(l);
  // torch: (p - y) / max(p (1 - p), 1e-12) / N, finite.
  CHECK(p.grad().at(0) == doctest::Approx(-0.25e12));
  CHECK(p.grad().at(1) == doctest::Approx(0.25e12));
  CHECK(p.grad().at(2) == 0.0f);
  CHECK(p.grad().at(3) == 0.0f);
  for (int i = 0; i < 4; ++i) CHECK(std::isfinite(p.grad().at(i)));
  end_step();

  Rng rng(11);
  const Tensor y = vec({1, 0, 0.3f, 1, 0});
  testing::check_gradients([&](const std::vector<Var>& v) { return bce(v[0], y); },
                           {testing::random_tensor({5}, rng, 0.2f, 0.8f)});
  testing::check_gradients([&](const std::vector<Var>& v) { return bce(v[0], y); },
                           {testing::random_tensor({5, 1}, rng, 0.2f, 0.8f)});

  CHECK_THROWS_WITH_AS(bce(constant(Tensor::zeros({3})), Tensor::zeros({2})),
                       "bce: prob [3] and label [2] must both hold N >= 1 values ([N] or [N, 1])", ShapeError);
  CHECK_THROWS_WITH_AS(bce(constant(Tensor::zeros({2, 2})), Tensor::zeros({4})),
                       "bce: prob [2, 2] and label [4] must both hold N >= 1 values ([N] or [N, 1])", ShapeError);
  CHECK_THROWS_WITH_AS(bce(constant(vec({0.5f, 1.5f})), vec({0, 1})), "bce: prob[1] = 1.5 is outside [0, 1]", Error);
  CHECK_THROWS_WITH_AS(bce(constant(vec({0.5f, 0.5f})), vec({0, 2})), "bce: label[1] = 2 is outside [0, 1]", Error);
  end_step();
}

TEST_CASE("bce_with_logits is stable and agrees with bce on sigmoid") {
  // softplus(x) - x y: (ln 2 + softplus(2) + softplus(-3) + 3) / 3
  const double expect = (std::log(2.0) + softplus(2) + softplus(-3) + 3) / 3;
  CHECK(loss_value(bce_with_logits(constant(vec({0, 2, -3})), vec({1, 0, 1}))) == doctest::Approx(expect).epsilon(1e-6));
  // Saturated logits: exact, no overflow.
  CHECK(loss_value(bce_with_logits(constant(vec({100, -100})), vec({0, 1}))) == doctest::Approx(100.0).epsilon(1e-6));
  CHECK(loss_value(bce_with_logits(constant(vec({100, -100})), vec({1, 0}))) < 1e-30f);
  // Same value as BCELoss on sigmoid(x) where the latter is accurate.
  const Tensor x = vec({-2.0f, -0.5f, 0.3f, 1.7f});
  Tensor s = Tensor::empty({4});
  for (int i = 0; i < 4; ++i) s.at(i) = 1.0f / (1.0f + std::exp(-x.at(i)));
  const Tensor y = vec({0, 1, 1, 0.5f});
  CHECK(loss_value(bce_with_logits(constant(x), y)) == doctest::Approx(loss_value(bce(constant(s), y))).epsilon(1e-5));
  end_step();

  Parameter p(vec({100.0f, -100.0f, 0.0f}));
  backward(bce_with_logits(p, vec({0, 0, 1})));
  CHECK(p.grad().at(0) == doctest::Approx(1.0 / 3));   // (sigmoid - y) / N
  CHECK(p.grad().at(1) == doctest::Approx(0.0));
  CHECK(p.grad().at(2) == doctest::Approx(-0.5 / 3));
  end_step();

  Rng rng(12);
  const Tensor yl = vec({1, 0, 0.5f, 1, 0, 1});
  testing::check_gradients([&](const std::vector<Var>& v) { return bce_with_logits(v[0], yl); },
                           {testing::random_tensor({6}, rng, -3, 3)});
}

TEST_CASE("bpr: Torch-RecHub BPRLoss values, 1-d and [N, k] negatives, no overflow") {
  // softplus(-1) and softplus(1), averaged.
  const double expect = (softplus(-1) + softplus(1)) / 2;  // 0.8132616875
  CHECK(expect == doctest::Approx(0.8132616875));
  CHECK(loss_value(bpr(constant(vec({1, 0})), constant(vec({0, 1})))) == doctest::Approx(expect).epsilon(1e-6));
  CHECK(loss_value(bpr(constant(mat(1, 1, {1})), constant(mat(1, 2, {0, 2})))) == doctest::Approx(expect).epsilon(1e-6));
  // Torch-RecHub's -sigmoid(d).log() is inf here; softplus gives the exact 200.
  CHECK(loss_value(bpr(constant(vec({0})), constant(vec({200})))) == doctest::Approx(200.0).epsilon(1e-6));
  end_step();

  Parameter pos(vec({0.0f})), neg(vec({200.0f}));
  backward(bpr(pos, neg));
  CHECK(pos.grad().at(0) == doctest::Approx(-1.0));
  CHECK(neg.grad().at(0) == doctest::Approx(1.0));
  end_step();

  Rng rng(13);
  testing::check_gradients([](const std::vector<Var>& v) { return bpr(v[0], v[1]); },
                           {testing::random_tensor({5}, rng, -2, 2), testing::random_tensor({5}, rng, -2, 2)});
  testing::check_gradients([](const std::vector<Var>& v) { return bpr(v[0], v[1]); },
                           {testing::random_tensor({4, 1}, rng, -2, 2), testing::random_tensor({4, 3}, rng, -2, 2)});
  // Only the positive trains (negatives a constant).
  const Tensor negc = testing::random_tensor({4, 3}, rng, -2, 2);
  testing::check_gradients([&](const std::vector<Var>& v) { return bpr(v[0], constant(negc)); },
                           {testing::random_tensor({4}, rng, -2, 2)});
  CHECK_THROWS_WITH_AS(bpr(constant(Tensor::zeros({3})), constant(Tensor::zeros({2, 2}))),
                       "bpr: pos_score [3] and neg_score [2, 2] do not match (expects pos [N] or [N, 1] and neg [N] "
                       "or [N, k] with N >= 1)",
                       ShapeError);
  end_step();
}

TEST_CASE("hinge: Torch-RecHub HingeLoss (margin 2), rank weighting, gradient") {
  const Tensor pos = vec({1, 0}), neg = mat(2, 2, {0, 0.5f, -3, -2.5f});
  // row 0: max(0.5 - 1 + 2, 0) = 1.5; row 1: max(-2.5 + 2, 0) = 0.
  CHECK(loss_value(hinge(constant(pos), constant(neg))) == doctest::Approx(0.75).epsilon(1e-6));
  CHECK(loss_value(hinge(constant(pos), constant(neg), 4.0f)) == doctest::Approx((3.5 + 1.5) / 2).epsilon(1e-6));
  // num_items = 10: row 0 has 2 of 2 impostors -> rank 10, weight ln 11; row 1 has none.
  CHECK(loss_value(hinge(constant(pos), constant(neg), 2.0f, 10)) == doctest::Approx(0.75 * std::log(11.0)).epsilon(1e-6));
  // 1-d neg: one negative per row (not the batch max): max(0 - 1 + 2, 0), max(-3 + 2, 0).
  CHECK(loss_value(hinge(constant(pos), constant(vec({0, -3})))) == doctest::Approx(0.5).epsilon(1e-6));
  end_step();

  Parameter pp(pos.clone()), pn(neg.clone());
  backward(hinge(pp, pn));
  CHECK(pp.grad().at(0) == doctest::Approx(-0.5));
  CHECK(pp.grad().at(1) == 0.0f);
  CHECK(pn.grad().at(0) == 0.0f);
  CHECK(pn.grad().at(1) == doctest::Approx(0.5));  // only the hardest negative
  CHECK(pn.grad().at(2) == 0.0f);
  CHECK(pn.grad().at(3) == 0.0f);
  end_step();

  // Away from the kinks (every active margin and every max gap well above the 1e-2 FD step).
  const Tensor p4 = vec({0.5f, -0.3f, 1.2f, 3.0f}), n4 = mat(4, 3, {0.1f, -0.7f, 0.6f, 0.9f, 0.2f, -1.0f, -0.5f, 0.4f,
                                                                    0.0f, -2.0f, -1.5f, -3.0f});
  testing::check_gradients([](const std::vector<Var>& v) { return hinge(v[0], v[1]); }, {p4, n4});
  testing::check_gradients([](const std::vector<Var>& v) { return hinge(v[0], v[1], 1.0f, 50); }, {p4, n4});
  CHECK_THROWS_WITH_AS(hinge(constant(pos), constant(neg), 2.0f, -1),
                       "hinge: num_items must be >= 0 (0 = no rank weighting), got -1", ConfigError);
  end_step();
}

TEST_CASE("softmax_cross_entropy matches CrossEntropyLoss; list-wise uses column 0") {
  const Tensor x = mat(2, 3, {1, 2, 3, 1, 1, 1});
  // row 0: ln(e + e^2 + e^3) - 3 = 0.4076059644; row 1: ln 3.
  const double r0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3;
  CHECK(r0 == doctest::Approx(0.4076059644));
  CHECK(loss_value(softmax_cross_entropy(constant(x), ivec({2, 0}))) ==
        doctest::Approx((r0 + std::log(3.0)) / 2).epsilon(1e-6));
  // Temperature 2: logits halved.
  const double t0 = std::log(std::exp(0.5) + std::exp(1.0) + std::exp(1.5)) - 0.5;
  CHECK(loss_value(softmax_cross_entropy(constant(x), ivec({0, 1}), 2.0f)) ==
        doctest::Approx((t0 + std::log(3.0)) / 2).epsilon(1e-6));
  // Large logits stay finite (log-sum-exp subtracts the max).
  CHECK(loss_value(softmax_cross_entropy(constant(mat(1, 2, {1000, 0})), ivec({1}))) ==
        doctest::Approx(1000.0).epsilon(1e-6));
  // List-wise: target 0 on every row.
  const Tensor s = mat(2, 3, {2, 1, -1, 0.5f, 0.7f, 3});
  CHECK(loss_value(listwise_softmax_ce(constant(s), 0.7f)) ==
        doctest::Approx(loss_value(softmax_cross_entropy(constant(s), ivec({0, 0}), 0.7f))).epsilon(1e-7));
  end_step();

  Parameter p(x.clone());
  backward(softmax_cross_entropy(p, ivec({2, 0})));
  CHECK(p.grad().at(3) == doctest::Approx((1.0 / 3 - 1) / 2));  // uniform row: (1/3 - 1) / N
  CHECK(p.grad().at(4) == doctest::Approx((1.0 / 3) / 2));
  end_step();

  Rng rng(14);
  const Tensor tgt = ivec({3, 0, 1, 4});
  testing::check_gradients([&](const std::vector<Var>& v) { return softmax_cross_entropy(v[0], tgt); },
                           {testing::random_tensor({4, 5}, rng, -2, 2)});
  testing::check_gradients([&](const std::vector<Var>& v) { return softmax_cross_entropy(v[0], tgt, 0.5f); },
                           {testing::random_tensor({4, 5}, rng, -1, 1)});
  testing::check_gradients([](const std::vector<Var>& v) { return listwise_softmax_ce(v[0], 0.5f); },
                           {testing::random_tensor({3, 4}, rng, -1, 1)});

  CHECK_THROWS_WITH_AS(softmax_cross_entropy(constant(x), ivec({2, 3})),
                       "softmax_cross_entropy: target[1] = 3 is outside [0, 3)", DataError);
  CHECK_THROWS_WITH_AS(softmax_cross_entropy(constant(x), ivec({2})),
                       "softmax_cross_entropy: target [1] does not match logits [2, 3] (expects [2])", ShapeError);
  CHECK_THROWS_WITH_AS(softmax_cross_entropy(constant(x), vec({2, 0})),
                       "softmax_cross_entropy: target must be int32, got float32 [2]", ShapeError);
  CHECK_THROWS_WITH_AS(listwise_softmax_ce(constant(x), 0.0f), "listwise_softmax_ce: temperature must be > 0, got 0",
                       ConfigError);
  CHECK_THROWS_WITH_AS(listwise_softmax_ce(constant(vec({1, 2}))),
                       "listwise_softmax_ce: logits must be [N, C] with N, C >= 1, got [2]", ShapeError);
  end_step();
}

TEST_CASE("inbatch_softmax: values, log-Q correction, accidental hits") {
  // B = 2, D = 1: u = [1, 2], v = [1, -1] -> S = [[1, -1], [2, -2]].
  // row 0: ln(e^1 + e^-1) - 1 = ln(1 + e^-2); row 1: ln(e^2 + e^-2) + 2 = 4 + ln(1 + e^-4).
  const Tensor U = mat(2, 1, {1, 2}), V = mat(2, 1, {1, -1});
  const double plain = (std::log1p(std::exp(-2.0)) + 4 + std::log1p(std::exp(-4.0))) / 2;
  CHECK(loss_value(inbatch_softmax(constant(U), constant(V))) == doctest::Approx(plain).epsilon(1e-6));
  // log-Q: logits[i][j] -= log q_j with q = (0.5, 0.25) -> column 1 gains ln 2 relative to column 0.
  const float lq[2] = {std::log(0.5f), std::log(0.25f)};
  const double r0 = std::log(std::exp(1 - std::log(0.5)) + std::exp(-1 - std::log(0.25))) - (1 - std::log(0.5));
  const double r1 = std::log(std::exp(2 - std::log(0.5)) + std::exp(-2 - std::log(0.25))) - (-2 - std::log(0.25));
  CHECK(loss_value(inbatch_softmax(constant(U), constant(V), 1.0f, lq)) == doctest::Approx((r0 + r1) / 2).epsilon(1e-6));
  // Both rows hold the same item: each row's only negative is an accidental hit -> loss 0.
  const std::int32_t same[2] = {7, 7};
  CHECK(loss_value(inbatch_softmax(constant(U), constant(V), 1.0f, nullptr, same)) == 0.0f);
  end_step();

  Rng rng(15);
  const Tensor Ub = testing::random_tensor({6, 4}, rng), Vb = testing::random_tensor({6, 4}, rng);
  const float lq6[6] = {-1.0f, -2.5f, -0.3f, -4.0f, -1.7f, -2.0f};
  const std::int32_t ids6[6] = {3, 9, 3, 5, 9, 3};
  CHECK(loss_value(inbatch_softmax(constant(Ub), constant(Vb), 0.3f)) ==
        doctest::Approx(ref_inbatch(Ub, Vb, 0.3, nullptr, nullptr)).epsilon(1e-5));
  CHECK(loss_value(inbatch_softmax(constant(Ub), constant(Vb), 0.3f, lq6, ids6)) ==
        doctest::Approx(ref_inbatch(Ub, Vb, 0.3, lq6, ids6)).epsilon(1e-5));
  end_step();

  auto gc = [&](float T, const float* q, const std::int32_t* ids) {
    testing::check_gradients([&](const std::vector<Var>& v) { return inbatch_softmax(v[0], v[1], T, q, ids); },
                             {testing::random_tensor({5, 3}, rng), testing::random_tensor({5, 3}, rng)});
  };
  gc(1.0f, nullptr, nullptr);
  gc(0.5f, lq6, nullptr);
  gc(0.5f, nullptr, ids6);
  gc(0.5f, lq6, ids6);
  // One tower feeding both sides: both gradients accumulate into the same buffer.
  testing::check_gradients([](const std::vector<Var>& v) { return inbatch_softmax(v[0], v[0], 0.5f); },
                           {testing::random_tensor({4, 3}, rng)});
  // Large batch: threaded GEMM and row loop against the reference.
  const Tensor Ul = testing::random_tensor({300, 16}, rng), Vl = testing::random_tensor({300, 16}, rng);
  CHECK(loss_value(inbatch_softmax(constant(Ul), constant(Vl), 0.2f)) ==
        doctest::Approx(ref_inbatch(Ul, Vl, 0.2, nullptr, nullptr)).epsilon(1e-5));
  CHECK_THROWS_WITH_AS(inbatch_softmax(constant(Tensor::zeros({2, 3})), constant(Tensor::zeros({2, 4}))),
                       "inbatch_softmax: user [2, 3] and item [2, 4] must both be [B, D] with B >= 1", ShapeError);
  CHECK_THROWS_WITH_AS(inbatch_softmax(constant(U), constant(V), -1.0f),
                       "inbatch_softmax: temperature must be > 0, got -1", ConfigError);
  end_step();
}

TEST_CASE("inbatch_cyclic_softmax reproduces Torch-RecHub YoutubeSBC's loss") {
  Rng rng(16);
  const Tensor U = testing::random_tensor({6, 4}, rng), V = testing::random_tensor({6, 4}, rng);
  // Torch-RecHub corrects with log(sample_weight), sample_weight = count^0.75 / sum.
  const float w[6] = {0.3f, 0.05f, 0.2f, 0.15f, 0.1f, 0.2f};
  float lw[6];
  for (int j = 0; j < 6; ++j) lw[j] = std::log(w[j]);
  for (int n_neg : {0, 1, 3, 5, 8}) {  // 8 >= B: the window wraps onto the row itself
    for (bool cosine : {true, false}) {
      CAPTURE(n_neg);
      CAPTURE(cosine);
      CHECK(loss_value(inbatch_cyclic_softmax(constant(U), constant(V), n_neg, 0.5f, lw, cosine)) ==
            doctest::Approx(ref_youtube_sbc(U, V, n_neg, 0.5, lw, cosine)).epsilon(1e-5));
      CHECK(loss_value(inbatch_cyclic_softmax(constant(U), constant(V), n_neg, 0.02f, nullptr, cosine)) ==
            doctest::Approx(ref_youtube_sbc(U, V, n_neg, 0.02, nullptr, cosine)).epsilon(1e-5));
    }
  }
  // n_neg = B - 1 with the dot product and no correction is exactly the full in-batch softmax.
  CHECK(loss_value(inbatch_cyclic_softmax(constant(U), constant(V), 5, 0.5f, nullptr, false)) ==
        doctest::Approx(loss_value(inbatch_softmax(constant(U), constant(V), 0.5f))).epsilon(1e-6));
  // Hand value: B = 2, D = 1, n_neg = 1, cosine of 1-d vectors is +-1:
  // u = [1, -2], v = [3, 4]: cos = [[1, 1], [-1, -1]] -> every row's two logits tie -> ln 2.
  CHECK(loss_value(inbatch_cyclic_softmax(constant(mat(2, 1, {1, -2})), constant(mat(2, 1, {3, 4})), 1, 0.1f)) ==
        doctest::Approx(std::log(2.0)).epsilon(1e-6));
  end_step();

  for (bool cosine : {true, false})
    for (int n_neg : {1, 3, 6}) {
      CAPTURE(cosine);
      CAPTURE(n_neg);
      testing::check_gradients(
          [&](const std::vector<Var>& v) { return inbatch_cyclic_softmax(v[0], v[1], n_neg, 0.5f, lw, cosine); },
          {testing::random_tensor({5, 3}, rng), testing::random_tensor({5, 3}, rng)});
    }
  testing::check_gradients([&](const std::vector<Var>& v) { return inbatch_cyclic_softmax(v[0], v[1], 2, 1.0f); },
                           {testing::random_tensor({4, 3}, rng), testing::random_tensor({4, 3}, rng)});
  CHECK_THROWS_WITH_AS(inbatch_cyclic_softmax(constant(U), constant(V), -1),
                       "inbatch_cyclic_softmax: n_neg must be >= 0, got -1", ConfigError);
  end_step();
}

TEST_CASE("losses record nothing under NoGrad and only touch inputs that need gradients") {
  Parameter p(vec({0.3f, 0.6f}));
  {
    NoGrad ng;
    Var l = bce(p, vec({1, 0}));
    CHECK_FALSE(l.requires_grad());
    CHECK_FALSE(static_cast<bool>(l.node()->backward));
  }
  end_step();
  // A constant user side: only the item side receives gradient.
  Rng rng(17);
  Parameter item(testing::random_tensor({3, 2}, rng));
  Var u = constant(testing::random_tensor({3, 2}, rng));
  backward(inbatch_softmax(u, item, 0.5f));
  CHECK_FALSE(u.has_grad());
  double n = 0;
  for (int i = 0; i < 6; ++i) n += std::fabs(item.grad().at(i));
  CHECK(n > 0);
  end_step();
}
