// Optimisers: Adam (torch semantics, weight decay, state for checkpoints), lazy Adam on
// touched embedding rows, allocation-free steps, and clip_grad_norm.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "gradcheck.hpp"
#include "rechub/optim/adam.hpp"
#include "rechub/optim/clip.hpp"

using namespace rechub;

#include "alloc_counter.hpp"  // counts operator new: steady-state steps must allocate nothing

namespace {

Tensor vec(std::initializer_list<float> v) { return Tensor::from_vector({static_cast<std::int64_t>(v.size())}, v.begin()); }

void set_grad(Parameter& p, std::initializer_list<float> g) {
  REQUIRE(static_cast<std::int64_t>(g.size()) == p.numel());
  std::copy(g.begin(), g.end(), p.grad().f32());
}

// Adam by hand, in double: the textbook update with torch's bias correction and L2 decay.
struct RefAdam {
  double lr, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd;
  std::vector<double> p, m, v;
  int t = 0;
  RefAdam(std::vector<double> p0, double lr_, double wd_) : lr(lr_), wd(wd_), p(p0), m(p0.size()), v(p0.size()) {}
  void step(const std::vector<double>& grad) {
    ++t;
    for (std::size_t i = 0; i < p.size(); ++i) {
      const double g = grad[i] + wd * p[i];
      m[i] = b1 * m[i] + (1 - b1) * g;
      v[i] = b2 * v[i] + (1 - b2) * g * g;
      const double mhat = m[i] / (1 - std::pow(b1, t)), vhat = v[i] / (1 - std::pow(b2, t));
      p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
  }
};

}  // namespace

TEST_CASE("Adam: two steps on two elements match the update worked by hand") {
  for (double wd : {0.0, 0.1}) {
    CAPTURE(wd);
    Parameter w(vec({1.0f, -2.0f}));
    AdamOptions o;
    o.lr = 0.01;
    o.weight_decay = wd;
    Adam opt({&w}, o);
    RefAdam ref({1.0, -2.0}, 0.01, wd);

    set_grad(w, {0.5f, -1.0f});
    opt.step();
    ref.step({0.5, -1.0});
    // Step 1 of Adam moves every element by lr * sign(g) (m_hat / sqrt(v_hat) = g / |g|), with or
    // without decay since decay does not flip the sign here: 1 -> 0.99, -2 -> -1.99.
    CHECK(w.value().at(0) == doctest::Approx(0.99).epsilon(1e-6));
    CHECK(w.value().at(1) == doctest::Approx(-1.99).epsilon(1e-6));
    CHECK(opt.state(0).exp_avg.at(0) == doctest::Approx(0.1 * (0.5 + wd * 1.0)).epsilon(1e-6));
    CHECK(opt.state(0).exp_avg_sq.at(1) == doctest::Approx(0.001 * std::pow(-1.0 + wd * -2.0, 2)).epsilon(1e-6));
    CHECK(opt.step_count(0) == 1);

    set_grad(w, {0.1f, 0.3f});
    opt.step();
    ref.step({0.1, 0.3});
    for (int i = 0; i < 2; ++i) {
      CHECK(w.value().at(i) == doctest::Approx(ref.p[i]).epsilon(1e-6));
      CHECK(opt.state(0).exp_avg.at(i) == doctest::Approx(ref.m[i]).epsilon(1e-6));
      CHECK(opt.state(0).exp_avg_sq.at(i) == doctest::Approx(ref.v[i]).epsilon(1e-6));
    }
    CHECK(opt.step_count(0) == 2);
  }
  // Concrete numbers for the second step without decay (worked out by hand):
  //   m = 0.9 * 0.05 + 0.1 * 0.1 = 0.055,  v = 0.999 * 0.00025 + 0.001 * 0.01 = 0.00025975
  //   p = 0.99 - 0.01 * (0.055 / 0.19) / (sqrt(0.00025975 / 0.001999) + 1e-8) = 0.99 - 0.0080305...
  const double m2 = 0.055 / 0.19, v2 = 0.00025975 / (1 - 0.999 * 0.999);
  const double p2 = 0.99 - 0.01 * m2 / (std::sqrt(v2) + 1e-8);
  CHECK(p2 == doctest::Approx(0.9819695).epsilon(1e-6));
  Parameter w(vec({1.0f, -2.0f}));
  AdamOptions o;
  o.lr = 0.01;
  Adam opt({&w}, o);
  set_grad(w, {0.5f, -1.0f});
  opt.step();
  set_grad(w, {0.1f, 0.3f});
  opt.step();
  CHECK(w.value().at(0) == doctest::Approx(p2).epsilon(1e-6));
}

TEST_CASE("Adam on a large tensor (threaded update) matches the reference everywhere") {
  Rng rng(21);
  const std::int64_t n = 120000;
  Parameter w(testing::random_tensor({300, 400}, rng));
  std::vector<double> p0(w.value().f32(), w.value().f32() + n);
  AdamOptions o;
  o.lr = 0.003;
  o.weight_decay = 0.01;
  Adam opt({&w}, o);
  RefAdam ref(p0, 0.003, 0.01);
  for (int s = 0; s < 3; ++s) {
    std::vector<double> g(n);
    for (std::int64_t i = 0; i < n; ++i) g[i] = w.grad().f32()[i] = rng.uniform(-1.0f, 1.0f);
    opt.step();
    ref.step(g);
  }
  double worst = 0;
  for (std::int64_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(w.value().f32()[i] - ref.p[i]));
  CHECK(worst < 2e-6);
}

TEST_CASE("lazy Adam updates only touched rows and leaves the others bit for bit") {
  Rng rng(22);
  const Tensor init = testing::random_tensor({5, 3}, rng);
  Parameter lazy(init.clone()), dense(init.clone());
  lazy.track_rows(true);
  AdamOptions o;
  o.lr = 0.05;
  o.weight_decay = 0.01;  // decay moves every row of the dense copy, but only touched lazy rows
  Adam lazy_opt({&lazy}, o), dense_opt({&dense}, o);

  // Step 1: rows 1 and 3 receive gradient.
  for (int r : {1, 3}) {
    for (int c = 0; c < 3; ++c) lazy.grad().f32()[r * 3 + c] = dense.grad().f32()[r * 3 + c] = rng.uniform(-1, 1);
    lazy.var().mark_row(r);
  }
  lazy_opt.step();
  dense_opt.step();
  for (int r = 0; r < 5; ++r)
    for (int c = 0; c < 3; ++c) {
      const int e = r * 3 + c;
      if (r == 1 || r == 3) {
        CHECK(lazy.value().at(e) == dense.value().at(e));  // the same fused update, bit for bit
        CHECK(lazy.value().at(e) != init.at(e));
        CHECK(lazy_opt.state(0).exp_avg.at(e) == dense_opt.state(0).exp_avg.at(e));
        CHECK(lazy_opt.state(0).exp_avg_sq.at(e) == dense_opt.state(0).exp_avg_sq.at(e));
      } else {
        CHECK(lazy.value().at(e) == init.at(e));
        CHECK(lazy_opt.state(0).exp_avg.at(e) == 0.0f);
        CHECK(lazy_opt.state(0).exp_avg_sq.at(e) == 0.0f);
        CHECK(dense.value().at(e) != init.at(e));  // dense decay did move it
      }
    }

  // zero_grad clears exactly the touched rows and the row set.
  lazy_opt.zero_grad();
  CHECK(lazy.touched_rows()->rows.empty());
  for (int e = 0; e < 15; ++e) CHECK(lazy.grad().at(e) == 0.0f);

  // Step 2 touches row 2 only: rows 1 and 3 keep value and moments from step 1 exactly, and row 2
  // gets a first update with the bias correction of the GLOBAL step t = 2.
  const Tensor after1 = lazy.value().clone(), m1 = lazy_opt.state(0).exp_avg.clone(),
               v1 = lazy_opt.state(0).exp_avg_sq.clone();
  const float g2[3] = {0.4f, -0.2f, 0.9f};
  for (int c = 0; c < 3; ++c) lazy.grad().f32()[6 + c] = g2[c];
  lazy.var().mark_row(2);
  lazy_opt.step();
  CHECK(lazy_opt.step_count(0) == 2);
  for (int e = 0; e < 15; ++e) {
    if (e / 3 == 2) continue;
    CHECK(lazy.value().at(e) == after1.at(e));
    CHECK(lazy_opt.state(0).exp_avg.at(e) == m1.at(e));
    CHECK(lazy_opt.state(0).exp_avg_sq.at(e) == v1.at(e));
  }
  for (int c = 0; c < 3; ++c) {
    const double p = init.at(6 + c), g = g2[c] + 0.01 * p;
    const double m = 0.1 * g, v = 0.001 * g * g;
    const double expect = p - 0.05 * (m / (1 - 0.81)) / (std::sqrt(v / (1 - 0.999 * 0.999)) + 1e-8);
    CHECK(lazy.value().at(6 + c) == doctest::Approx(expect).epsilon(1e-6));
  }
  // Rows marked through the tape's Var handle reach the same RowSet.
  CHECK(lazy.touched_rows()->rows.size() == 1);
}

TEST_CASE("Adam state is named for checkpoints and restores to identical trajectories") {
  Rng rng(23);
  Parameter a1(testing::random_tensor({4, 2}, rng)), b1(testing::random_tensor({3}, rng));
  Parameter a2(a1.value().clone()), b2(b1.value().clone());
  Adam opt1({{"tower.weight", &a1}, {"tower.bias", &b1}, {"tower.weight_again", &a1}});
  CHECK(opt1.size() == 2);  // the duplicate is dropped
  auto st = opt1.named_state();
  REQUIRE(st.size() == 6);
  CHECK(st[0].first == "tower.weight.exp_avg");
  CHECK(st[1].first == "tower.weight.exp_avg_sq");
  CHECK(st[2].first == "tower.weight.step");
  CHECK(st[2].second->dtype() == DType::i32);
  CHECK(st[5].first == "tower.bias.step");
  Adam unnamed({&a2, &b2});
  CHECK(unnamed.named_state()[3].first == "1.exp_avg");

  auto fill = [&](Parameter& p, Rng& r) {
    for (std::int64_t i = 0; i < p.numel(); ++i) p.grad().f32()[i] = r.uniform(-1, 1);
  };
  Rng g1(5);
  for (int s = 0; s < 3; ++s) {
    fill(a1, g1);
    fill(b1, g1);
    opt1.step();
  }
  // Restore into a fresh optimiser over copies of the parameters.
  a2.value().copy_from(a1.value());
  b2.value().copy_from(b1.value());
  Adam opt2({{"tower.weight", &a2}, {"tower.bias", &b2}});
  auto src = opt1.named_state();
  auto dst = opt2.named_state();
  for (std::size_t i = 0; i < src.size(); ++i) {
    REQUIRE(src[i].first == dst[i].first);
    dst[i].second->copy_from(*src[i].second);
  }
  CHECK(opt2.step_count(0) == 3);
  Rng g2(99), g3(99);
  fill(a1, g2);
  fill(b1, g2);
  fill(a2, g3);
  fill(b2, g3);
  opt1.step();
  opt2.step();
  for (int i = 0; i < 8; ++i) CHECK(a1.value().at(i) == a2.value().at(i));
  for (int i = 0; i < 3; ++i) CHECK(b1.value().at(i) == b2.value().at(i));
}

TEST_CASE("Adam skips frozen parameters, validates options, supports set_lr") {
  Parameter w(vec({1.0f})), frozen(vec({2.0f}));
  frozen.set_requires_grad(false);
  Adam opt({&w, &frozen});
  set_grad(w, {1.0f});
  set_grad(frozen, {1.0f});
  opt.set_lr(0.5);
  opt.step();
  CHECK(w.value().at(0) == doctest::Approx(0.5).epsilon(1e-6));
  CHECK(frozen.value().at(0) == 2.0f);
  CHECK(opt.step_count(1) == 0);
  opt.zero_grad();
  CHECK(w.grad().at(0) == 0.0f);

  AdamOptions bad;
  bad.beta1 = 1.0;
  CHECK_THROWS_WITH_AS(Adam({&w}, bad), "Adam: invalid beta1 1 (must be in [0, 1))", ConfigError);
  bad = AdamOptions();
  bad.lr = -0.1;
  CHECK_THROWS_WITH_AS(Adam({&w}, bad), "Adam: invalid learning rate -0.1 (must be >= 0)", ConfigError);
  bad = AdamOptions();
  bad.weight_decay = -1;
  CHECK_THROWS_WITH_AS(Adam({&w}, bad), "Adam: invalid weight_decay -1 (must be >= 0)", ConfigError);
}

TEST_CASE("Adam step and zero_grad allocate nothing after the first step") {
  Rng rng(24);
  Parameter dense(testing::random_tensor({256, 256}, rng)), small(testing::random_tensor({7}, rng));
  Parameter table(testing::random_tensor({1000, 16}, rng));
  table.track_rows(true);
  Adam opt({{"dense", &dense}, {"small", &small}, {"table", &table}});
  auto one_step = [&](int s) {
    for (std::int32_t r = 0; r < 64; ++r) {
      const std::int32_t row = (r * 37 + s * 11) % 1000;
      table.var().mark_row(row);
      table.grad().f32()[row * 16] = 0.5f;
    }
    dense.grad().f32()[s] = 1.0f;
    opt.step();
    opt.zero_grad();
  };
  one_step(0);  // warms the OpenMP pool and the row set's capacity
  const long before = rechub::testing::allocations();
  for (int s = 1; s < 4; ++s) one_step(s);
  CHECK(rechub::testing::allocations() - before == 0);
}

TEST_CASE("clip_grad_norm returns the pre-clip norm and scales like torch") {
  Parameter a(vec({0.0f, 0.0f})), b(vec({0.0f, 0.0f})), frozen(vec({0.0f}));
  frozen.set_requires_grad(false);
  set_grad(a, {3.0f, 4.0f});
  set_grad(b, {0.0f, 12.0f});
  set_grad(frozen, {100.0f});
  // Below the limit: nothing changes.
  CHECK(clip_grad_norm({&a, &b, &frozen}, 20.0f) == doctest::Approx(13.0).epsilon(1e-7));
  CHECK(a.grad().at(0) == 3.0f);
  CHECK(b.grad().at(1) == 12.0f);
  // Above: scaled by max_norm / (norm + 1e-6); a parameter listed twice counts once.
  const double c = 6.5 / (13.0 + 1e-6);
  CHECK(clip_grad_norm({&a, &b, &frozen, &a}, 6.5f) == doctest::Approx(13.0).epsilon(1e-7));
  CHECK(a.grad().at(0) == doctest::Approx(3 * c).epsilon(1e-7));
  CHECK(a.grad().at(1) == doctest::Approx(4 * c).epsilon(1e-7));
  CHECK(b.grad().at(1) == doctest::Approx(12 * c).epsilon(1e-7));
  CHECK(frozen.grad().at(0) == 100.0f);
  CHECK(clip_grad_norm({&a, &b}, 100.0f) == doctest::Approx(6.5).epsilon(1e-6));

  // A lazy table contributes its touched rows; the named overload works on module names.
  Parameter table(Tensor::zeros({4, 2}));
  table.track_rows(true);
  table.grad().f32()[2 * 2] = 5.0f;
  table.var().mark_row(2);
  Parameter d(vec({0.0f}));
  set_grad(d, {12.0f});
  CHECK(clip_grad_norm({{"emb", &table}, {"d", &d}}, 1.3f) == doctest::Approx(13.0).epsilon(1e-7));
  CHECK(table.grad().at(4) == doctest::Approx(5 * 1.3 / (13 + 1e-6)).epsilon(1e-6));
  CHECK(d.grad().at(0) == doctest::Approx(12 * 1.3 / (13 + 1e-6)).epsilon(1e-6));

  // Large gradient: the blocked, threaded sum agrees with a plain one.
  Rng rng(25);
  Parameter big(Tensor::zeros({500, 300}));
  double sq = 0;
  for (std::int64_t i = 0; i < big.numel(); ++i) {
    big.grad().f32()[i] = rng.uniform(-1, 1);
    sq += double(big.grad().f32()[i]) * big.grad().f32()[i];
  }
  CHECK(clip_grad_norm({&big}, 1.0f) == doctest::Approx(std::sqrt(sq)).epsilon(1e-6));
  double after = 0;
  for (std::int64_t i = 0; i < big.numel(); ++i) after += double(big.grad().f32()[i]) * big.grad().f32()[i];
  CHECK(std::sqrt(after) == doctest::Approx(1.0).epsilon(1e-5));
  CHECK_THROWS_WITH_AS(clip_grad_norm({&a}, -1.0f), "clip_grad_norm: max_norm must be >= 0, got -1", ConfigError);
}
