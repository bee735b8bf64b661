// Elementwise ops with broadcasting, activations, dropout, softmax, linear_act.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "gradcheck.hpp"
#include "rechub/ops/activation.hpp"
#include "rechub/ops/elementwise.hpp"
#include "rechub/ops/softmax.hpp"

using namespace rechub;
using testing::check_gradients;
using testing::random_tensor;

namespace {
Tensor make(const Shape& s, std::vector<float> v) {
  REQUIRE(static_cast<std::int64_t>(v.size()) == s.numel());
  return Tensor::from_vector(s, v.data());
}
// Values at least `gap` away from 0, so finite differences never straddle a kink (relu, prelu)
// or a pole (div, log).
Tensor away_from_zero(const Shape& s, Rng& rng, float gap = 0.1f) {
  Tensor t = random_tensor(s, rng);
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    float& v = t.f32()[i];
    v = v < 0 ? v - gap : v + gap;
  }
  return t;
}
// Reference a (op) b by explicit 4-d index arithmetic.
template <class F>
Tensor naive_broadcast(const Tensor& a, const Tensor& b, const Shape& os, F f) {
  Tensor out = Tensor::empty(os);
  auto idx = [](const Tensor& t, const std::int64_t* o, int ond) {
    std::int64_t off = 0;
    for (int i = 0; i < t.ndim(); ++i) {
      const std::int64_t oi = o[i + (ond - t.ndim())];
      off = off * t.dim(i) + (t.dim(i) == 1 ? 0 : oi);
    }
    return off;
  };
  std::int64_t o[4] = {0, 0, 0, 0};
  for (std::int64_t i = 0; i < out.numel(); ++i) {
    std::int64_t rem = i;
    for (int k = os.ndim() - 1; k >= 0; --k) {
      o[k] = rem % os[k];
      rem /= os[k];
    }
    out.f32()[i] = f(a.f32()[idx(a, o, os.ndim())], b.f32()[idx(b, o, os.ndim())]);
  }
  return out;
}
}  // namespace

TEST_CASE("binary ops broadcast like numpy") {
  Tensor a = make({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor row = make({3}, {10, 20, 30});
  Tensor col = make({2, 1}, {2, 4});
  Var s = add(constant(a), constant(row));
  CHECK(s.shape() == Shape{2, 3});
  const float want_s[] = {11, 22, 33, 14, 25, 36};
  for (int i = 0; i < 6; ++i) CHECK(s.value().f32()[i] == want_s[i]);
  Var m = mul(constant(col), constant(a));  // per-row scalar on the left
  const float want_m[] = {2, 4, 6, 16, 20, 24};
  for (int i = 0; i < 6; ++i) CHECK(m.value().f32()[i] == want_m[i]);
  Var d = sub(constant(row), constant(a));  // the smaller operand first
  CHECK(d.value().f32()[5] == 24.0f);
  Var q = div(constant(a), constant(col));
  CHECK(q.value().f32()[4] == doctest::Approx(1.25));
  // [2, 1, 3] + [4, 1] -> [2, 4, 3]: both operands stretch.
  Rng rng(1);
  Tensor x = random_tensor({2, 1, 3}, rng), y = random_tensor({4, 1}, rng);
  Var z = add(constant(x), constant(y));
  CHECK(z.shape() == Shape{2, 4, 3});
  Tensor ref = naive_broadcast(x, y, {2, 4, 3}, [](float u, float v) { return u + v; });
  for (std::int64_t i = 0; i < ref.numel(); ++i) CHECK(z.value().f32()[i] == ref.f32()[i]);
  // Operators are thin wrappers.
  Var o = (constant(a) + constant(row)) * 2.0f - 1.0f;
  CHECK(o.value().f32()[0] == 21.0f);
  Var o2 = 1.0f - constant(a) / constant(col);
  CHECK(o2.value().f32()[0] == 0.5f);
  CHECK_THROWS_WITH_AS(add(constant(a), constant(Tensor::zeros({4}))), "add: shapes [2, 3] and [4] do not broadcast",
                       ShapeError);
  CHECK_THROWS_WITH_AS(mul(constant(Tensor::zeros({2, 3, 1})), constant(Tensor::zeros({4, 2}))),
                       "mul: shapes [2, 3, 1] and [4, 2] do not broadcast", ShapeError);
  end_step();
}

TEST_CASE("binary op gradients over every broadcast pattern") {
  Rng rng(2);
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{3, 4}, {3, 4}},              // equal shapes: one flat loop
      {{3, 4}, {4}},                 // b a trailing suffix of a (bias-like)
      {{3, 4}, {3, 1}},              // per-row scalars
      {{4}, {3, 4}},                 // the smaller operand on the left
      {{3, 1}, {3, 4}},              // per-row scalars on the left
      {{2, 3, 4}, {1}},              // a single scalar
      {{2, 1, 3, 1}, {1, 4, 1, 5}},  // general 4-d, both stretch
      {{2, 3, 4}, {2, 1, 4}},        // a middle dim
  };
  for (auto& c : cases) {
    CAPTURE(c.first.str());
    CAPTURE(c.second.str());
    check_gradients([](const std::vector<Var>& v) { return add(v[0], v[1]); },
                    {random_tensor(c.first, rng), random_tensor(c.second, rng)});
    check_gradients([](const std::vector<Var>& v) { return sub(v[0], v[1]); },
                    {random_tensor(c.first, rng), random_tensor(c.second, rng)});
    check_gradients([](const std::vector<Var>& v) { return mul(v[0], v[1]); },
                    {random_tensor(c.first, rng), random_tensor(c.second, rng)});
    // |b| >= 0.5 keeps the quotient's curvature, hence the finite-difference error, small.
    check_gradients([](const std::vector<Var>& v) { return div(v[0], v[1]); },
                    {random_tensor(c.first, rng), away_from_zero(c.second, rng, 0.5f)});
  }
  // The same Var on both sides receives both contributions.
  check_gradients([](const std::vector<Var>& v) { return mul(v[0], v[0]); }, {random_tensor({2, 3}, rng)});
}

TEST_CASE("large broadcast forward and backward match a naive reference (threaded paths)") {
  Rng rng(3);
  Tensor a = random_tensor({512, 96}, rng), b = random_tensor({96}, rng), c = random_tensor({512, 1}, rng);
  Parameter pa(a.clone()), pb(b.clone()), pc(c.clone());
  Var y = mul(add(pa, pb), pc);  // (a + b) * c
  Tensor ref = naive_broadcast(naive_broadcast(a, b, {512, 96}, [](float u, float v) { return u + v; }), c, {512, 96},
                               [](float u, float v) { return u * v; });
  for (std::int64_t i = 0; i < ref.numel(); ++i) REQUIRE(y.value().f32()[i] == ref.f32()[i]);
  tape().backward(y, Tensor::full({512, 96}, 1.0f));
  // d/da = c (per row), d/db = sum_r c_r, d/dc_r = sum_j (a_rj + b_j).
  double sum_c = 0;
  for (int r = 0; r < 512; ++r) sum_c += c.f32()[r];
  for (int j = 0; j < 96; ++j) CHECK(pb.grad().f32()[j] == doctest::Approx(sum_c).epsilon(1e-4));
  for (int r = 0; r < 512; r += 37) {
    CHECK(pa.grad().f32()[r * 96 + 5] == c.f32()[r]);
    double s = 0;
    for (int j = 0; j < 96; ++j) s += double(a.f32()[r * 96 + j]) + b.f32()[j];
    CHECK(pc.grad().f32()[r] == doctest::Approx(s).epsilon(1e-4));
  }
  end_step();
  // A single scalar against a large tensor: every output element feeds the same gradient
  // element, so that reduction must not be split across threads.
  Parameter big(random_tensor({600, 100}, rng)), s(Tensor::full({1}, 3.0f));
  Var z = mul(big, s);
  tape().backward(z, Tensor::full({600, 100}, 1.0f));
  double total = 0;
  for (std::int64_t i = 0; i < 60000; ++i) total += big.value().f32()[i];
  CHECK(s.grad().f32()[0] == doctest::Approx(total).epsilon(1e-4).scale(1.0));
  CHECK(big.grad().f32()[123] == 3.0f);
  end_step();
}

TEST_CASE("unary ops: values and gradients") {
  Rng rng(4);
  Tensor x = make({4}, {0.25f, 1.0f, 2.0f, 4.0f});
  CHECK(scale(constant(x), 3.0f).value().f32()[1] == 3.0f);
  CHECK(add_scalar(constant(x), -1.0f).value().f32()[0] == -0.75f);
  CHECK(neg(constant(x)).value().f32()[2] == -2.0f);
  CHECK(exp(constant(x)).value().f32()[1] == doctest::Approx(std::exp(1.0)));
  CHECK(log(constant(x)).value().f32()[3] == doctest::Approx(std::log(4.0)));
  CHECK(square(constant(x)).value().f32()[3] == 16.0f);
  CHECK(sqrt(constant(x)).value().f32()[0] == 0.5f);
  CHECK((-constant(x)).value().f32()[0] == -0.25f);
  end_step();
  const Shape s{3, 5};
  check_gradients([](const std::vector<Var>& v) { return scale(v[0], -1.5f); }, {random_tensor(s, rng)});
  check_gradients([](const std::vector<Var>& v) { return add_scalar(v[0], 2.0f); }, {random_tensor(s, rng)});
  check_gradients([](const std::vector<Var>& v) { return neg(v[0]); }, {random_tensor(s, rng)});
  check_gradients([](const std::vector<Var>& v) { return exp(v[0]); }, {random_tensor(s, rng)});
  check_gradients([](const std::vector<Var>& v) { return square(v[0]); }, {random_tensor(s, rng)});
  // log and sqrt are smooth on x > 0 only: sample [0.5, 2].
  check_gradients([](const std::vector<Var>& v) { return log(v[0]); }, {random_tensor(s, rng, 0.5f, 2.0f)});
  check_gradients([](const std::vector<Var>& v) { return sqrt(v[0]); }, {random_tensor(s, rng, 0.5f, 2.0f)});
  CHECK_THROWS_WITH_AS(exp(constant(Tensor::zeros({2}, DType::i32))), "exp: input must be float32, got int32 [2]",
                       ShapeError);
  end_step();
}

TEST_CASE("relu, sigmoid, tanh: values, saturation, gradients") {
  Rng rng(5);
  Tensor x = make({5}, {-100.0f, -1.0f, 0.0f, 1.0f, 100.0f});
  Var r = relu(constant(x)), s = sigmoid(constant(x)), t = tanh(constant(x));
  const float want_r[] = {0, 0, 0, 1, 100};
  for (int i = 0; i < 5; ++i) CHECK(r.value().f32()[i] == want_r[i]);
  CHECK(s.value().f32()[0] >= 0.0f);  // e^100 must not overflow into NaN
  CHECK(s.value().f32()[0] < 1e-40f);
  CHECK(s.value().f32()[2] == 0.5f);
  CHECK(s.value().f32()[4] == 1.0f);
  CHECK(s.value().f32()[1] == doctest::Approx(1.0 / (1.0 + std::exp(1.0))));
  CHECK(t.value().f32()[3] == doctest::Approx(std::tanh(1.0)));
  end_step();
  check_gradients([](const std::vector<Var>& v) { return relu(v[0]); }, {away_from_zero({4, 5}, rng)});
  check_gradients([](const std::vector<Var>& v) { return sigmoid(v[0]); }, {random_tensor({4, 5}, rng, -3, 3)});
  check_gradients([](const std::vector<Var>& v) { return tanh(v[0]); }, {random_tensor({4, 5}, rng, -2, 2)});
}

TEST_CASE("prelu with one slope and with per-channel slopes") {
  Rng rng(6);
  Tensor x = make({2, 3}, {-2, 1, -4, 3, -1, 0});
  Var y1 = prelu(constant(x), constant(make({1}, {0.25f})));
  const float want1[] = {-0.5f, 1, -1, 3, -0.25f, 0};
  for (int i = 0; i < 6; ++i) CHECK(y1.value().f32()[i] == want1[i]);
  Var y3 = prelu(constant(x), constant(make({3}, {0.1f, 0.2f, 0.3f})));
  const float want3[] = {-0.2f, 1, -1.2f, 3, -0.2f, 0};
  for (int i = 0; i < 6; ++i) CHECK(y3.value().f32()[i] == doctest::Approx(want3[i]));
  CHECK_THROWS_WITH_AS(prelu(constant(x), constant(Tensor::zeros({2}))),
                       "prelu: slope [2] must be [1] or [3] for input [2, 3]", ShapeError);
  end_step();
  check_gradients([](const std::vector<Var>& v) { return prelu(v[0], v[1]); },
                  {away_from_zero({4, 3}, rng), make({1}, {0.25f})});
  check_gradients([](const std::vector<Var>& v) { return prelu(v[0], v[1]); },
                  {away_from_zero({2, 2, 3}, rng), random_tensor({3}, rng)});
}

TEST_CASE("dice (Torch-RecHub): per-row statistics, values and gradients") {
  Rng rng(7);
  Tensor x = make({2, 4}, {1, -2, 3, 0.5f, -1, -1, 2, 4});
  const float alpha = -0.3f, eps = 1e-3f;
  Var y = dice(constant(x), constant(make({1}, {alpha})), eps);
  for (int r = 0; r < 2; ++r) {
    double m = 0, v = 0;
    for (int c = 0; c < 4; ++c) m += x.f32()[r * 4 + c] / 4.0;
    for (int c = 0; c < 4; ++c) v += (x.f32()[r * 4 + c] - m) * (x.f32()[r * 4 + c] - m) + eps;  // sum, not mean
    for (int c = 0; c < 4; ++c) {
      const double xv = x.f32()[r * 4 + c], p = 1.0 / (1.0 + std::exp(-(xv - m) / std::sqrt(v)));
      CHECK(y.value().f32()[r * 4 + c] == doctest::Approx(p * xv + (1 - p) * alpha * xv).epsilon(1e-5));
    }
  }
  end_step();
  check_gradients([](const std::vector<Var>& v) { return dice(v[0], v[1]); },
                  {random_tensor({3, 5}, rng), make({1}, {0.4f})});
  check_gradients([](const std::vector<Var>& v) { return dice(v[0], v[1], 1e-2f); },
                  {random_tensor({2, 2, 5}, rng, -2, 2), random_tensor({5}, rng)});
}

TEST_CASE("dropout: eval is the identity, training zeroes ~p and scales by 1/(1-p)") {
  Rng rng(8);
  Parameter xp(Tensor::full({200, 500}, 2.0f));
  Var x = xp.var();
  CHECK(dropout(x, 0.3f, false, rng).node() == x.node());  // eval: no node at all
  CHECK(dropout(x, 0.0f, true, rng).node() == x.node());
  const std::size_t before = tape().size();
  Var y = dropout(x, 0.3f, true, rng);
  CHECK(tape().size() == before + 1);
  std::int64_t zeros = 0;
  for (std::int64_t i = 0; i < y.value().numel(); ++i) {
    const float v = y.value().f32()[i];
    if (v == 0.0f) ++zeros;
    else REQUIRE(v == 2.0f / 0.7f);
  }
  // 100k Bernoulli(0.3) draws: standard deviation of the fraction is 0.00145; allow 5 sigma.
  CHECK(std::fabs(double(zeros) / 1e5 - 0.3) < 0.0075);
  tape().backward(y, Tensor::full({200, 500}, 1.0f));
  for (std::int64_t i = 0; i < 1000; ++i)
    CHECK(xp.grad().f32()[i] == (y.value().f32()[i] == 0.0f ? 0.0f : 1.0f / 0.7f));
  end_step();
  // The same Rng state gives the same mask; p = 1 drops everything.
  Rng r1(9), r2(9);
  Var a = dropout(constant(Tensor::full({64}, 1.0f)), 0.5f, true, r1);
  Var b = dropout(constant(Tensor::full({64}, 1.0f)), 0.5f, true, r2);
  for (int i = 0; i < 64; ++i) CHECK(a.value().f32()[i] == b.value().f32()[i]);
  Var all = dropout(constant(Tensor::full({8}, 1.0f)), 1.0f, true, r1);
  for (int i = 0; i < 8; ++i) CHECK(all.value().f32()[i] == 0.0f);
  CHECK_THROWS_WITH_AS(dropout(x, 1.5f, true, rng), "dropout: p must be in [0, 1], got 1.5", ConfigError);
  end_step();
  check_gradients(
      [](const std::vector<Var>& v) {
        Rng fixed(10);  // the same mask on every evaluation
        return dropout(v[0], 0.4f, true, fixed);
      },
      {random_tensor({4, 6}, rng)});
}

TEST_CASE("softmax and log_softmax without a mask") {
  Rng rng(11);
  Tensor x = make({2, 3}, {1, 2, 3, 1000, 1000, 1000});  // the second row would overflow a naive exp
  Var s = softmax(constant(x)), l = log_softmax(constant(x));
  const double e1 = std::exp(1.0), e2 = std::exp(2.0), e3 = std::exp(3.0), z = e1 + e2 + e3;
  CHECK(s.value().f32()[0] == doctest::Approx(e1 / z));
  CHECK(s.value().f32()[2] == doctest::Approx(e3 / z));
  CHECK(l.value().f32()[1] == doctest::Approx(2.0 - std::log(z)));
  for (int k = 3; k < 6; ++k) CHECK(s.value().f32()[k] == doctest::Approx(1.0 / 3.0));
  CHECK(l.value().f32()[4] == doctest::Approx(-std::log(3.0)));
  end_step();
  check_gradients([](const std::vector<Var>& v) { return softmax(v[0]); }, {random_tensor({3, 5}, rng, -2, 2)});
  check_gradients([](const std::vector<Var>& v) { return log_softmax(v[0]); }, {random_tensor({2, 2, 4}, rng, -2, 2)});
}

TEST_CASE("masked softmax: partial rows renormalise, fully masked rows are zero, never NaN") {
  Rng rng(12);
  Tensor x = random_tensor({3, 4}, rng, -2, 2);
  const std::int32_t mv[] = {1, 1, 0, 1,   // partially masked
                             0, 0, 0, 0,   // fully masked
                             1, 1, 1, 1};  // nothing masked
  Tensor mask = Tensor::from_vector({3, 4}, mv);
  Var s = softmax(constant(x), mask), l = log_softmax(constant(x), mask);
  double z = 0;
  for (int k : {0, 1, 3}) z += std::exp(double(x.f32()[k]));
  for (int k : {0, 1, 3}) {
    CHECK(s.value().f32()[k] == doctest::Approx(std::exp(double(x.f32()[k])) / z));
    CHECK(l.value().f32()[k] == doctest::Approx(double(x.f32()[k]) - std::log(z)));
  }
  CHECK(s.value().f32()[2] == 0.0f);
  CHECK(l.value().f32()[2] == 0.0f);
  for (int k = 4; k < 8; ++k) {
    CHECK(s.value().f32()[k] == 0.0f);
    CHECK(l.value().f32()[k] == 0.0f);
  }
  end_step();
  // Gradients, including the zero gradient of the masked and fully masked positions.
  check_gradients([&](const std::vector<Var>& v) { return softmax(v[0], mask); }, {random_tensor({3, 4}, rng)});
  check_gradients([&](const std::vector<Var>& v) { return log_softmax(v[0], mask); }, {random_tensor({3, 4}, rng)});
  Parameter p(random_tensor({3, 4}, rng));
  Var out = log_softmax(p, mask);
  tape().backward(out, Tensor::full({3, 4}, 1.0f));
  for (int k = 4; k < 8; ++k) CHECK(p.grad().f32()[k] == 0.0f);
  CHECK(p.grad().f32()[2] == 0.0f);
  for (int k = 0; k < 12; ++k) CHECK(std::isfinite(p.grad().f32()[k]));
  end_step();
}

TEST_CASE("softmax mask broadcasts over leading dims") {
  Rng rng(13);
  // x [B=2, H=3, L=4] with mask [B, 1, L]: every head of a sample shares that sample's mask.
  Tensor x = random_tensor({2, 3, 4}, rng);
  const std::int32_t mv[] = {1, 1, 1, 0, 1, 0, 0, 0};
  Tensor mask = Tensor::from_vector({2, 1, 4}, mv);
  Var s = softmax(constant(x), mask);
  for (int b = 0; b < 2; ++b)
    for (int h = 0; h < 3; ++h) {
      const float* row = s.value().f32() + (b * 3 + h) * 4;
      double sum = 0;
      for (int k = 0; k < 4; ++k) {
        sum += row[k];
        if (!mv[b * 4 + k]) CHECK(row[k] == 0.0f);
      }
      CHECK(sum == doctest::Approx(1.0));
      if (b == 1) CHECK(row[0] == 1.0f);
    }
  // A mask [L] applies to every row; one with fewer leading dims is right-aligned.
  Tensor m1 = Tensor::from_vector({4}, mv);
  Var s1 = softmax(constant(x), m1);
  CHECK(s1.value().f32()[4 * 5 + 3] == 0.0f);
  check_gradients([&](const std::vector<Var>& v) { return softmax(v[0], mask); }, {random_tensor({2, 3, 4}, rng)});
  CHECK_THROWS_WITH_AS(softmax(constant(x), Tensor::zeros({3, 1, 4}, DType::i32)),
                       "softmax: mask [3, 1, 4] does not broadcast to input [2, 3, 4]", ShapeError);
  CHECK_THROWS_WITH_AS(softmax(constant(x), Tensor::zeros({2, 3, 5}, DType::i32)),
                       "softmax: mask [2, 3, 5] does not broadcast to input [2, 3, 4]", ShapeError);
  CHECK_THROWS_WITH_AS(log_softmax(constant(x), Tensor::zeros({2, 3, 4})),
                       "log_softmax: mask must be int32, got float32 [2, 3, 4]", ShapeError);
  end_step();
}

TEST_CASE("linear_act equals linear followed by the activation, values and gradients") {
  Rng rng(14);
  const Tensor x = random_tensor({5, 4}, rng), w = random_tensor({3, 4}, rng), b = random_tensor({3}, rng);
  const Tensor a1 = make({1}, {0.2f}), a3 = make({3}, {0.1f, -0.3f, 0.5f});
  for (ActKind k : {ActKind::none, ActKind::relu, ActKind::prelu, ActKind::sigmoid, ActKind::tanh})
    for (const Tensor* slope : {&a1, &a3}) {
      CAPTURE(act_name(k));
      Parameter px(x.clone()), pw(w.clone()), pb(b.clone()), pa(slope->clone());
      Var fused = linear_act(px, pw, pb, k, pa);
      Var z = linear(px, pw, pb);
      Var ref = k == ActKind::none      ? z
                : k == ActKind::relu    ? relu(z)
                : k == ActKind::prelu   ? prelu(z, pa)
                : k == ActKind::sigmoid ? sigmoid(z)
                                        : tanh(z);
      for (int i = 0; i < 15; ++i) CHECK(fused.value().f32()[i] == doctest::Approx(ref.value().f32()[i]).epsilon(1e-6));
      Tensor seed = random_tensor({5, 3}, rng);
      tape().backward(fused, seed);
      std::vector<Tensor> g1;
      for (Parameter* p : {&px, &pw, &pb, &pa}) {
        g1.push_back(p->grad().clone());
        p->zero_grad();
      }
      end_step();
      Var ref2 = linear(px, pw, pb);
      ref2 = k == ActKind::none      ? ref2
             : k == ActKind::relu    ? relu(ref2)
             : k == ActKind::prelu   ? prelu(ref2, pa)
             : k == ActKind::sigmoid ? sigmoid(ref2)
                                     : tanh(ref2);
      tape().backward(ref2, seed);
      int idx = 0;
      for (Parameter* p : {&px, &pw, &pb, &pa}) {
        for (std::int64_t i = 0; i < p->numel(); ++i)
          CHECK(g1[idx].f32()[i] == doctest::Approx(p->grad().f32()[i]).epsilon(1e-5));
        ++idx;
      }
      end_step();
    }
  check_gradients([](const std::vector<Var>& v) { return linear_act(v[0], v[1], v[2], ActKind::tanh); },
                  {random_tensor({2, 3, 4}, rng), random_tensor({3, 4}, rng), random_tensor({3}, rng)});
  check_gradients([](const std::vector<Var>& v) { return linear_act(v[0], v[1], Var(), ActKind::sigmoid); },
                  {random_tensor({3, 4}, rng), random_tensor({2, 4}, rng)});
  CHECK_THROWS_WITH_AS(linear_act(constant(x), constant(w), constant(b), ActKind::prelu),
                       "linear_act: slope is required", ShapeError);
  end_step();
}
