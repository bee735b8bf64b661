// Normalisation ops: layer_norm, batch_norm1d (+ fused activation), l2_normalize, dice_bn.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "gradcheck.hpp"
#include "rechub/ops/norm.hpp"

using namespace rechub;
using testing::check_gradients;
using testing::random_tensor;

namespace {
Tensor make(const Shape& s, std::vector<float> v) {
  REQUIRE(static_cast<std::int64_t>(v.size()) == s.numel());
  return Tensor::from_vector(s, v.data());
}
Var apply_act(const Var& z, ActKind k, const Var& slope) {
  switch (k) {
    case ActKind::relu:
      return relu(z);
    case ActKind::prelu:
      return prelu(z, slope);
    case ActKind::sigmoid:
      return sigmoid(z);
    case ActKind::tanh:
      return tanh(z);
    default:
      return z;
  }
}
}  // namespace

TEST_CASE("layer_norm: normalised rows, affine, gradients") {
  Rng rng(1);
  Tensor x = random_tensor({3, 2, 8}, rng, -3, 3);
  Var y = layer_norm(constant(x), Var(), Var(), 1e-8f);  // SASRec's eps
  for (int r = 0; r < 6; ++r) {
    double m = 0, v = 0;
    for (int k = 0; k < 8; ++k) m += y.value().f32()[r * 8 + k] / 8.0;
    for (int k = 0; k < 8; ++k) v += std::pow(y.value().f32()[r * 8 + k] - m, 2) / 8.0;
    CHECK(std::fabs(m) < 1e-6);
    CHECK(v == doctest::Approx(1.0).epsilon(1e-5));
  }
  Tensor g = random_tensor({8}, rng), b = random_tensor({8}, rng);
  Var ya = layer_norm(constant(x), constant(g), constant(b), 1e-8f);
  for (int i = 0; i < 48; ++i)
    CHECK(ya.value().f32()[i] == doctest::Approx(y.value().f32()[i] * g.f32()[i % 8] + b.f32()[i % 8]).epsilon(1e-6));
  CHECK_THROWS_WITH_AS(layer_norm(constant(x), constant(Tensor::zeros({4})), Var()),
                       "layer_norm: gamma [4] does not match input [3, 2, 8]", ShapeError);
  end_step();
  check_gradients([](const std::vector<Var>& v) { return layer_norm(v[0], v[1], v[2]); },
                  {random_tensor({4, 6}, rng), random_tensor({6}, rng, 0.5f, 1.5f), random_tensor({6}, rng)});
  check_gradients([](const std::vector<Var>& v) { return layer_norm(v[0], Var(), Var(), 1e-8f); },
                  {random_tensor({2, 3, 5}, rng)});
}

TEST_CASE("batch_norm1d training: batch statistics and running stats updated by hand") {
  Rng rng(2);
  const std::int64_t N = 5, C = 3;
  Tensor x = random_tensor({N, C}, rng, -2, 3);
  Tensor gamma = make({C}, {1.0f, 2.0f, 0.5f}), beta = make({C}, {0.0f, -1.0f, 0.25f});
  Tensor rm = Tensor::zeros({C}), rv = Tensor::full({C}, 1.0f);
  Var y = batch_norm1d(constant(x), constant(gamma), constant(beta), rm, rv, true);
  std::vector<double> mean(C), var(C);
  for (int c = 0; c < C; ++c) {
    for (int r = 0; r < N; ++r) mean[c] += x.f32()[r * C + c] / double(N);
    for (int r = 0; r < N; ++r) var[c] += std::pow(x.f32()[r * C + c] - mean[c], 2) / double(N);  // biased
    for (int r = 0; r < N; ++r) {
      const double want = (x.f32()[r * C + c] - mean[c]) / std::sqrt(var[c] + 1e-5) * gamma.f32()[c] + beta.f32()[c];
      CHECK(y.value().f32()[r * C + c] == doctest::Approx(want).epsilon(1e-5));
    }
    // momentum 0.1 towards the batch mean and the UNBIASED variance (N / (N - 1)).
    CHECK(rm.f32()[c] == doctest::Approx(0.1 * mean[c]).epsilon(1e-6));
    CHECK(rv.f32()[c] == doctest::Approx(0.9 + 0.1 * var[c] * N / (N - 1)).epsilon(1e-6));
  }
  // A second step with momentum 0.5 moves from the current running values.
  const std::vector<double> rm1 = {rm.f32()[0], rm.f32()[1], rm.f32()[2]};
  const std::vector<double> rv1 = {rv.f32()[0], rv.f32()[1], rv.f32()[2]};
  batch_norm1d(constant(x), Var(), Var(), rm, rv, true, 0.5f);
  for (int c = 0; c < C; ++c) {
    CHECK(rm.f32()[c] == doctest::Approx(0.5 * rm1[c] + 0.5 * mean[c]).epsilon(1e-6));
    CHECK(rv.f32()[c] == doctest::Approx(0.5 * rv1[c] + 0.5 * var[c] * N / (N - 1)).epsilon(1e-6));
  }
  end_step();
}

TEST_CASE("batch_norm1d eval uses the running stats and leaves them alone") {
  Rng rng(3);
  Tensor x = random_tensor({4, 2}, rng);
  Tensor rm = make({2}, {0.5f, -1.0f}), rv = make({2}, {4.0f, 0.25f});
  Tensor gamma = make({2}, {2.0f, 1.0f}), beta = make({2}, {1.0f, 0.0f});
  Var y = batch_norm1d(constant(x), constant(gamma), constant(beta), rm, rv, false);
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 2; ++c) {
      const double want =
          (x.f32()[r * 2 + c] - rm.f32()[c]) / std::sqrt(rv.f32()[c] + 1e-5) * gamma.f32()[c] + beta.f32()[c];
      CHECK(y.value().f32()[r * 2 + c] == doctest::Approx(want).epsilon(1e-6));
    }
  CHECK(rm.f32()[0] == 0.5f);
  CHECK(rv.f32()[1] == 0.25f);
  // A single row is fine in eval mode, but not in training (torch raises the same).
  Var one = batch_norm1d(constant(x.slice(0, 1)), Var(), Var(), rm, rv, false);
  CHECK(one.shape() == Shape{1, 2});
  CHECK_THROWS_WITH_AS(batch_norm1d(constant(x.slice(0, 1)), Var(), Var(), rm, rv, true),
                       "batch_norm1d: expected more than 1 value per channel when training, got input [1, 2]",
                       ShapeError);
  Tensor none;
  CHECK_THROWS_WITH_AS(batch_norm1d(constant(x), Var(), Var(), none, none, false),
                       "batch_norm1d: eval mode needs running_mean and running_var", ShapeError);
  CHECK_THROWS_WITH_AS(batch_norm1d(constant(Tensor::zeros({2, 3, 2})), Var(), Var(), rm, rv, true),
                       "batch_norm1d: input must be [N, C], got [2, 3, 2]", ShapeError);
  // Training without running stats (track_running_stats=False) works.
  Var t = batch_norm1d(constant(x), Var(), Var(), none, none, true);
  CHECK(t.shape() == Shape{4, 2});
  end_step();
}

TEST_CASE("batch_norm1d gradients in train and eval mode") {
  Rng rng(4);
  Tensor rm = random_tensor({4}, rng), rv = random_tensor({4}, rng, 0.5f, 2.0f);
  check_gradients([&](const std::vector<Var>& v) { return batch_norm1d(v[0], v[1], v[2], rm, rv, true); },
                  {random_tensor({6, 4}, rng, -2, 2), random_tensor({4}, rng, 0.5f, 1.5f), random_tensor({4}, rng)});
  check_gradients([&](const std::vector<Var>& v) { return batch_norm1d(v[0], Var(), Var(), rm, rv, true); },
                  {random_tensor({5, 4}, rng, -2, 2)});
  check_gradients([&](const std::vector<Var>& v) { return batch_norm1d(v[0], v[1], v[2], rm, rv, false); },
                  {random_tensor({3, 4}, rng), random_tensor({4}, rng), random_tensor({4}, rng)});
  // Smooth fused activations against finite differences.
  for (ActKind k : {ActKind::sigmoid, ActKind::tanh})
    check_gradients(
        [&](const std::vector<Var>& v) { return batch_norm1d_act(v[0], v[1], v[2], rm, rv, true, 0.1f, 1e-5f, k); },
        {random_tensor({6, 4}, rng, -2, 2), random_tensor({4}, rng, 0.5f, 1.5f), random_tensor({4}, rng)});
}

TEST_CASE("batch_norm1d_act equals batch_norm1d followed by the activation") {
  // relu/prelu have kinks where finite differences are unreliable; compare with the composition
  // of separately gradient-checked ops instead (values and every gradient).
  Rng rng(5);
  const Tensor x = random_tensor({7, 3}, rng, -2, 2), g = random_tensor({3}, rng, 0.5f, 1.5f),
               b = random_tensor({3}, rng);
  for (bool training : {true, false})
    for (ActKind k : {ActKind::none, ActKind::relu, ActKind::prelu, ActKind::sigmoid, ActKind::tanh})
      for (std::int64_t na : {1, 3}) {
        CAPTURE(act_name(k));
        CAPTURE(training);
        Parameter px(x.clone()), pg(g.clone()), pb(b.clone()), pa(random_tensor({na}, rng));
        Tensor rm1 = Tensor::zeros({3}), rv1 = Tensor::full({3}, 1.0f), rm2 = rm1.clone(), rv2 = rv1.clone();
        const Tensor seed = random_tensor({7, 3}, rng);
        Var fused = batch_norm1d_act(px, pg, pb, rm1, rv1, training, 0.1f, 1e-5f, k, pa);
        Tensor fv = fused.value().clone();
        tape().backward(fused, seed);
        std::vector<Tensor> g1;
        for (Parameter* p : {&px, &pg, &pb, &pa}) {
          g1.push_back(p->grad().clone());
          p->zero_grad();
        }
        end_step();
        Var ref = apply_act(batch_norm1d(px, pg, pb, rm2, rv2, training), k, pa);
        for (int i = 0; i < 21; ++i) CHECK(fv.f32()[i] == doctest::Approx(ref.value().f32()[i]).epsilon(1e-6));
        tape().backward(ref, seed);
        int idx = 0;
        for (Parameter* p : {&px, &pg, &pb, &pa}) {
          if (k != ActKind::prelu && p == &pa) break;
          for (std::int64_t i = 0; i < p->numel(); ++i)
            CHECK(g1[idx].f32()[i] == doctest::Approx(p->grad().f32()[i]).epsilon(1e-5).scale(1e-6));
          ++idx;
        }
        for (int c = 0; c < 3; ++c) CHECK(rm1.f32()[c] == rm2.f32()[c]);
        end_step();
      }
}

TEST_CASE("batch_norm1d_act with row weights equals the batch with each row repeated") {
  // Distinct rows [U, C] with counts w stand for the expanded batch [sum w, C]; the incoming
  // gradient of a distinct row is the sum of its copies' gradients (what a gather's backward gives).
  Rng rng(6);
  const std::vector<int> counts = {3, 1, 4, 2, 1};
  const std::int64_t U = 5, C = 3, N = 11;
  const Tensor xu = random_tensor({U, C}, rng, -2, 2), gam = random_tensor({C}, rng, 0.5f, 1.5f),
               bet = random_tensor({C}, rng), seed = random_tensor({N, C}, rng);
  Tensor w = Tensor::empty({U}), xe = Tensor::empty({N, C}), seed_u = Tensor::zeros({U, C});
  std::vector<int> of_row;
  for (std::int64_t u = 0; u < U; ++u) {
    w.f32()[u] = float(counts[std::size_t(u)]);
    for (int k = 0; k < counts[std::size_t(u)]; ++k) of_row.push_back(int(u));
  }
  for (std::int64_t r = 0; r < N; ++r)
    for (std::int64_t c = 0; c < C; ++c) {
      xe.f32()[r * C + c] = xu.f32()[of_row[std::size_t(r)] * C + c];
      seed_u.f32()[of_row[std::size_t(r)] * C + c] += seed.f32()[r * C + c];
    }
  for (bool training : {true, false})
    for (ActKind k : {ActKind::none, ActKind::relu, ActKind::prelu, ActKind::tanh}) {
      CAPTURE(act_name(k));
      CAPTURE(training);
      const Tensor slope = random_tensor({C}, rng);
      Parameter pxu(xu.clone()), pxe(xe.clone());
      Parameter g1(gam.clone()), b1(bet.clone()), a1(slope.clone()), g2(gam.clone()), b2(bet.clone()), a2(slope.clone());
      Tensor rm1 = random_tensor({C}, rng), rv1 = random_tensor({C}, rng, 0.5f, 2.0f), rm2 = rm1.clone(),
             rv2 = rv1.clone();
      Var yu = batch_norm1d_act(pxu, g1, b1, rm1, rv1, training, 0.1f, 1e-5f, k, a1, w);
      Var ye = batch_norm1d_act(pxe, g2, b2, rm2, rv2, training, 0.1f, 1e-5f, k, a2);
      for (std::int64_t r = 0; r < N; ++r)
        for (std::int64_t c = 0; c < C; ++c)
          CHECK(yu.value().f32()[of_row[std::size_t(r)] * C + c] ==
                doctest::Approx(ye.value().f32()[r * C + c]).epsilon(1e-5).scale(1e-6));
      for (std::int64_t c = 0; c < C; ++c) {
        CHECK(rm1.f32()[c] == doctest::Approx(rm2.f32()[c]).epsilon(1e-6));
        CHECK(rv1.f32()[c] == doctest::Approx(rv2.f32()[c]).epsilon(1e-6));
      }
      // Newest output first: a backward runs every older node that holds a gradient, so seeding
      // yu first would run its backward a second time from ye.
      tape().backward(ye, seed);
      tape().backward(yu, seed_u);
      for (std::int64_t u = 0; u < U; ++u)
        for (std::int64_t c = 0; c < C; ++c) {
          float dx_sum = 0.0f;
          for (std::int64_t r = 0; r < N; ++r)
            if (of_row[std::size_t(r)] == u) dx_sum += pxe.grad().f32()[r * C + c];
          CHECK(pxu.grad().f32()[u * C + c] == doctest::Approx(dx_sum).epsilon(1e-4).scale(1e-5));
        }
      for (auto [p, q] : {std::pair{&g1, &g2}, std::pair{&b1, &b2}, std::pair{&a1, &a2}}) {
        if (k != ActKind::prelu && p == &a1) break;
        for (std::int64_t c = 0; c < C; ++c)
          CHECK(p->grad().f32()[c] == doctest::Approx(q->grad().f32()[c]).epsilon(1e-5).scale(1e-6));
      }
      end_step();
    }
  // Weights must be finite counts >= 0, one per row; training needs them to sum past 1.
  Tensor rm = Tensor::zeros({C}), rv = Tensor::full({C}, 1.0f);
  Tensor bad = w.clone();
  bad.f32()[2] = -1.0f;
  CHECK_THROWS_WITH_AS(batch_norm1d_act(constant(xu), Var(), Var(), rm, rv, true, 0.1f, 1e-5f, ActKind::none, Var(), bad),
                       doctest::Contains("row weight -1 at row 2"), ShapeError);
  CHECK_THROWS_WITH_AS(
      batch_norm1d_act(constant(xu), Var(), Var(), rm, rv, true, 0.1f, 1e-5f, ActKind::none, Var(), Tensor::zeros({4})),
      doctest::Contains("row_weights [4] do not match input [5, 3]"), ShapeError);
  CHECK_THROWS_WITH_AS(
      batch_norm1d_act(constant(xu), Var(), Var(), rm, rv, true, 0.1f, 1e-5f, ActKind::none, Var(), Tensor::zeros({5})),
      doctest::Contains("row weights summing to 0"), ShapeError);
  end_step();
}

TEST_CASE("batch_norm1d_act over many row chunks and column tiles matches a double-precision reference") {
  // 303 rows: chunks of 64 (the last one 47 rows), one chunk all zero weights; 21 columns: a
  // 16-column tile (AVX2 where built) and a 5-column generic tail. Columns sit 40 + 3c away from 0
  // with spread ~1, so a variance taken about a poor mean would show (and float32 inputs that
  // large carry up to ~3e-5 of rounding into x A + B: the tolerances).
  Rng rng(7);
  const std::int64_t N = 303, C = 21;
  Tensor x = random_tensor({N, C}, rng, -1, 1), seed = random_tensor({N, C}, rng), w = Tensor::empty({N});
  for (std::int64_t r = 0; r < N; ++r) {
    for (std::int64_t c = 0; c < C; ++c) x.f32()[r * C + c] += 40.0f + 3.0f * float(c);
    w.f32()[r] = r >= 64 && r < 128 ? 0.0f : float(r % 3);
  }
  const Tensor gam = random_tensor({C}, rng, 0.5f, 1.5f), bet = random_tensor({C}, rng),
               slope = random_tensor({C}, rng);
  for (bool weighted : {false, true})
    for (ActKind k : {ActKind::none, ActKind::relu, ActKind::prelu, ActKind::sigmoid}) {
      CAPTURE(weighted);
      CAPTURE(act_name(k));
      Parameter px(x.clone()), pg(gam.clone()), pb(bet.clone()), pa(slope.clone());
      Tensor rm = Tensor::zeros({C}), rv = Tensor::full({C}, 1.0f);
      Var y = batch_norm1d_act(px, pg, pb, rm, rv, true, 0.1f, 1e-5f, k, pa, weighted ? w : Tensor());
      tape().backward(y, seed);
      for (std::int64_t c = 0; c < C; ++c) {
        double n = 0, s = 0, v = 0, s_g = 0, s_gx = 0, s_a = 0;
        auto wt = [&](std::int64_t r) { return weighted ? double(w.f32()[r]) : 1.0; };
        auto xv = [&](std::int64_t r) { return double(x.f32()[r * C + c]); };
        for (std::int64_t r = 0; r < N; ++r) n += wt(r), s += wt(r) * xv(r);
        const double mean = s / n;
        for (std::int64_t r = 0; r < N; ++r) v += wt(r) * (xv(r) - mean) * (xv(r) - mean);
        v /= n;
        CHECK(rm.f32()[c] == doctest::Approx(0.1 * mean).epsilon(1e-6));
        CHECK(rv.f32()[c] == doctest::Approx(0.9 + 0.1 * v * n / (n - 1)).epsilon(1e-5));
        const double is = 1.0 / std::sqrt(v + 1e-5), a = slope.f32()[c];
        std::vector<double> xh(N), gz(N);
        for (std::int64_t r = 0; r < N; ++r) {
          xh[r] = (xv(r) - mean) * is;
          const double z = gam.f32()[c] * xh[r] + bet.f32()[c], g = seed.f32()[r * C + c];
          double want = z;
          gz[r] = g;
          if (k == ActKind::relu) want = std::max(z, 0.0), gz[r] = z > 0 ? g : 0.0;
          if (k == ActKind::prelu) want = z > 0 ? z : a * z, gz[r] = z > 0 ? g : a * g, s_a += g * std::min(z, 0.0);
          if (k == ActKind::sigmoid) want = 1 / (1 + std::exp(-z)), gz[r] = g * want * (1 - want);
          CHECK(y.value().f32()[r * C + c] == doctest::Approx(want).epsilon(1e-4).scale(1.0));
          s_g += gz[r];
          s_gx += gz[r] * xh[r];
        }
        CHECK(pb.grad().f32()[c] == doctest::Approx(s_g).epsilon(5e-4).scale(1.0));
        CHECK(pg.grad().f32()[c] == doctest::Approx(s_gx).epsilon(5e-4).scale(1.0));
        if (k == ActKind::prelu) CHECK(pa.grad().f32()[c] == doctest::Approx(s_a).epsilon(5e-4).scale(1.0));
        for (std::int64_t r = 0; r < N; ++r) {
          const double dx = gam.f32()[c] * is * (gz[r] - wt(r) * (s_g + xh[r] * s_gx) / n);
          CHECK(px.grad().f32()[r * C + c] == doctest::Approx(dx).epsilon(1e-4).scale(0.1));
        }
      }
      end_step();
    }
}

TEST_CASE("row and column reductions are bit-identical for 1 and 2 threads") {
  Rng rng(6);
  const Tensor x = random_tensor({777, 48}, rng), g = random_tensor({48}, rng), b = random_tensor({48}, rng);
  const Tensor seed = random_tensor({777, 48}, rng);
  auto run = [&](int threads) {
    set_num_threads(threads);
    Parameter px(x.clone()), pg(g.clone()), pb(b.clone());
    Tensor rm = Tensor::zeros({48}), rv = Tensor::full({48}, 1.0f);
    Var y = add(layer_norm(px, pg, pb), batch_norm1d(px, pg, pb, rm, rv, true));
    tape().backward(y, seed);
    std::vector<Tensor> out = {y.value().clone(), px.grad().clone(), pg.grad().clone(), pb.grad().clone(), rv.clone()};
    end_step();
    return out;
  };
  const int saved = num_threads();
  auto one = run(1), two = run(2);
  set_num_threads(saved);
  for (std::size_t k = 0; k < one.size(); ++k) CHECK(std::memcmp(one[k].raw(), two[k].raw(), one[k].nbytes()) == 0);
}

TEST_CASE("l2_normalize: unit rows, zero rows stay finite, gradients on both sides of eps") {
  Rng rng(7);
  Tensor x = make({3, 2}, {3, 4, 0, 0, 1e-13f, 0});
  Var y = l2_normalize(constant(x));
  CHECK(y.value().f32()[0] == doctest::Approx(0.6));
  CHECK(y.value().f32()[1] == doctest::Approx(0.8));
  CHECK(y.value().f32()[2] == 0.0f);                  // 0 / max(0, eps): no NaN
  CHECK(y.value().f32()[4] == doctest::Approx(0.1));  // below eps the row is divided by eps
  end_step();
  check_gradients([](const std::vector<Var>& v) { return l2_normalize(v[0]); }, {random_tensor({4, 5}, rng)});
  // Row 0 has norm ~0.02 < eps = 0.1 (stays below under the 1e-2 probe); row 1 is ordinary.
  Tensor mixed = make({2, 3}, {0.01f, -0.01f, 0.005f, 0.5f, -0.7f, 0.2f});
  check_gradients([](const std::vector<Var>& v) { return l2_normalize(v[0], 0.1f); }, {mixed});
}

TEST_CASE("dice_bn (DIN paper): train mode gradients and eval on running stats") {
  Rng rng(8);
  Tensor rm = Tensor::zeros({4}), rv = Tensor::full({4}, 1.0f);
  check_gradients([&](const std::vector<Var>& v) { return dice_bn(v[0], v[1], rm, rv, true); },
                  {random_tensor({6, 4}, rng, -2, 2), random_tensor({4}, rng)});
  check_gradients([&](const std::vector<Var>& v) { return dice_bn(v[0], v[1], rm, rv, true); },
                  {random_tensor({5, 4}, rng, -2, 2), make({1}, {0.3f})});
  // Eval: p = sigmoid((x - rm) / sqrt(rv + eps)).
  Tensor em = make({2}, {0.5f, -0.5f}), ev = make({2}, {2.0f, 0.5f});
  Tensor x = random_tensor({3, 2}, rng);
  Var y = dice_bn(constant(x), constant(make({2}, {0.1f, -0.2f})), em, ev, false);
  const float alpha[] = {0.1f, -0.2f};
  for (int i = 0; i < 6; ++i) {
    const int c = i % 2;
    const double xv = x.f32()[i], p = 1.0 / (1.0 + std::exp(-(xv - em.f32()[c]) / std::sqrt(ev.f32()[c] + 1e-8)));
    CHECK(y.value().f32()[i] == doctest::Approx(xv * (alpha[c] + (1 - alpha[c]) * p)).epsilon(1e-5));
  }
  check_gradients([&](const std::vector<Var>& v) { return dice_bn(v[0], v[1], em, ev, false); },
                  {random_tensor({3, 2}, rng), random_tensor({2}, rng)});
}
