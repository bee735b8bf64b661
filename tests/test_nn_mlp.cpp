// nn: Linear, activation modules, Dropout, BatchNorm1d, MLP (names, counts, gradients, fitting).
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "gradcheck.hpp"
#include "rechub/nn/mlp.hpp"

using namespace rechub;
using testing::random_tensor;

#include "alloc_counter.hpp"  // counts operator new: steady-state steps must allocate nothing

namespace {
std::vector<std::string> names_of(const Module& m) {
  std::vector<std::string> out;
  for (auto& kv : m.named_parameters()) out.push_back(kv.first);
  return out;
}
std::vector<std::string> buffer_names_of(const Module& m) {
  std::vector<std::string> out;
  for (auto& kv : m.named_buffers()) out.push_back(kv.first);
  return out;
}

// Central differences on every parameter (and the input) of a module-built function, against
// backward. Same objective and tolerances as tests/gradcheck.hpp.
template <class F>
void check_module_gradients(Module& m, Parameter& input, F forward, std::uint64_t seed = 3) {
  std::vector<Parameter*> ps = m.parameters();
  ps.push_back(&input);
  Rng rng(seed);
  Tensor R;
  {
    Var out = forward();
    R = random_tensor(out.shape(), rng, 0.5f, 1.5f);
    m.zero_grad();
    input.zero_grad();
    tape().backward(out, R);
    end_step();
  }
  auto objective = [&] {
    NoGrad ng;
    Var out = forward();
    double s = 0;
    for (std::int64_t i = 0; i < out.value().numel(); ++i) s += double(out.value().f32()[i]) * R.f32()[i];
    end_step();
    return s;
  };
  for (std::size_t k = 0; k < ps.size(); ++k) {
    Tensor& x = ps[k]->value();
    int bad = 0;
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      const float orig = x.f32()[i];
      const double h = 1e-2 * std::max(1.0, std::fabs(double(orig)));
      x.f32()[i] = float(orig + h);
      const double fp = objective();
      x.f32()[i] = float(orig - h);
      const double fm = objective();
      x.f32()[i] = orig;
      const double numeric = (fp - fm) / (2 * h), analytic = ps[k]->grad().f32()[i];
      if (std::fabs(analytic - numeric) > 2e-3 + 2e-2 * std::fabs(numeric)) {
        if (bad < 5) MESSAGE("param ", k, " element ", i, ": analytic ", analytic, " numeric ", numeric);
        ++bad;
      }
    }
    CHECK_MESSAGE(bad == 0, "parameter ", k, " ", x.shape().str(), ": ", bad, " gradient mismatches");
  }
}
}  // namespace

TEST_CASE("Linear: torch init bounds, names, determinism, no-bias variant") {
  manual_seed(1);
  Linear a(16, 8);
  manual_seed(1);
  Linear b(16, 8);
  CHECK(names_of(a) == std::vector<std::string>{"weight", "bias"});
  CHECK(a.weight.shape() == Shape{8, 16});
  CHECK(a.bias.shape() == Shape{8});
  float lo = 1, hi = -1;
  for (std::int64_t i = 0; i < 128; ++i) {
    const float w = a.weight.value().f32()[i];
    CHECK(w == b.weight.value().f32()[i]);
    lo = std::min(lo, w);
    hi = std::max(hi, w);
  }
  CHECK(lo >= -0.25f);  // 1 / sqrt(16)
  CHECK(hi <= 0.25f);
  CHECK(hi - lo > 0.4f);  // and they fill the range
  for (int i = 0; i < 8; ++i) CHECK(std::fabs(a.bias.value().f32()[i]) <= 0.25f);
  Linear nb(4, 3, false);
  CHECK(names_of(nb) == std::vector<std::string>{"weight"});
  CHECK(nb.num_parameters() == 12);
  Var y = nb.forward(constant(Tensor::full({2, 5, 4}, 1.0f)));
  CHECK(y.shape() == Shape{2, 5, 3});
  CHECK_THROWS_WITH_AS(Linear(0, 3), "Linear: features must be positive, got in 0, out 3", ConfigError);
  end_step();
}

TEST_CASE("activation factory, PReLU and Dice parameters") {
  for (const char* n : {"relu", "ReLU", "sigmoid", "tanh", "none", "linear"}) {
    auto a = make_activation(n);
    CHECK(a->fusable());
    CHECK(a->num_parameters() == 0);
  }
  CHECK(make_activation("relu")->kind() == ActKind::relu);
  CHECK(make_activation("Sigmoid")->kind() == ActKind::sigmoid);
  auto p = make_activation("prelu");
  CHECK(p->kind() == ActKind::prelu);
  CHECK(names_of(*p) == std::vector<std::string>{"weight"});
  CHECK(p->slope().value().f32()[0] == 0.25f);  // torch nn.PReLU() init
  auto d = make_activation("dice");
  CHECK_FALSE(d->fusable());
  CHECK(names_of(*d) == std::vector<std::string>{"alpha"});
  CHECK(d->num_parameters() == 1);
  auto dbn = make_activation("dice_bn", 6);
  CHECK(dbn->num_parameters() == 6);
  CHECK(buffer_names_of(*dbn) == std::vector<std::string>{"bn.running_mean", "bn.running_var"});
  CHECK_THROWS_WITH_AS(make_activation("swish"),
                       "make_activation: unknown activation 'swish' (expected relu, prelu, sigmoid, tanh, dice, "
                       "dice_bn, none, linear)",
                       ConfigError);
  Var x = constant(Tensor::full({2, 3}, -2.0f));
  CHECK(p->forward(x).value().f32()[0] == -0.5f);
  CHECK(make_activation("none")->forward(x).node() == x.node());
  end_step();
}

TEST_CASE("BatchNorm1d and Dropout modules follow train/eval") {
  Rng rng(2);
  BatchNorm1d bn(3);
  CHECK(names_of(bn) == std::vector<std::string>{"weight", "bias"});
  CHECK(buffer_names_of(bn) == std::vector<std::string>{"running_mean", "running_var"});
  Tensor x = random_tensor({8, 3}, rng, 1, 3);
  bn.forward(constant(x));
  CHECK(bn.running_mean.f32()[0] > 0.1f);  // moved towards the batch mean (~2)
  const float rm0 = bn.running_mean.f32()[0];
  bn.eval();
  Var y = bn.forward(constant(x));
  CHECK(bn.running_mean.f32()[0] == rm0);
  CHECK(y.value().f32()[0] == doctest::Approx((x.f32()[0] - rm0) / std::sqrt(bn.running_var.f32()[0] + 1e-5)));
  Dropout drop(0.5f);
  Var in = constant(Tensor::full({100}, 1.0f));
  CHECK(drop.forward(in).node() != in.node());
  drop.eval();
  CHECK(drop.forward(in).node() == in.node());
  CHECK_THROWS_WITH_AS(Dropout(-0.1f), "Dropout: p must be in [0, 1], got -0.1", ConfigError);
  end_step();
}

TEST_CASE("MLP parameter names mirror torch's Sequential, counts by hand") {
  MLP m(16, {256, 128, 64}, "prelu", 0.0f, /*output_layer=*/false);
  // Per block: Linear in*out + out, BN 2*out, PReLU 1.
  const std::int64_t want = (16 * 256 + 256 + 512 + 1) + (256 * 128 + 128 + 256 + 1) + (128 * 64 + 64 + 128 + 1);
  CHECK(want == 46403);
  CHECK(m.num_parameters() == want);
  CHECK(m.output_dim() == 64);
  const std::vector<std::string> names = {
      "mlp.0.weight", "mlp.0.bias", "mlp.1.weight", "mlp.1.bias", "mlp.2.weight",  // block 0 (3 = Dropout)
      "mlp.4.weight", "mlp.4.bias", "mlp.5.weight", "mlp.5.bias", "mlp.6.weight",  // block 1
      "mlp.8.weight", "mlp.8.bias", "mlp.9.weight", "mlp.9.bias", "mlp.10.weight"};
  CHECK(names_of(m) == names);
  CHECK(buffer_names_of(m) == std::vector<std::string>{"mlp.1.running_mean", "mlp.1.running_var", "mlp.5.running_mean",
                                                       "mlp.5.running_var", "mlp.9.running_mean", "mlp.9.running_var"});
  // Torch-RecHub's default: relu and a final Linear(.., 1) at index 4 * len(dims).
  MLP d(10, {8, 4});
  CHECK(d.output_dim() == 1);
  CHECK(d.num_parameters() == (10 * 8 + 8 + 16) + (8 * 4 + 4 + 8) + (4 + 1));
  CHECK(names_of(d).back() == "mlp.8.bias");
  // Without batchnorm the blocks are Linear, activation, Dropout.
  MLP::Options o;
  o.dims = {8, 4};
  o.activation = "prelu";
  o.batchnorm = false;
  MLP nb(10, o);
  CHECK(names_of(nb) == std::vector<std::string>{"mlp.0.weight", "mlp.0.bias", "mlp.1.weight", "mlp.3.weight",
                                                 "mlp.3.bias", "mlp.4.weight", "mlp.6.weight", "mlp.6.bias"});
  CHECK(buffer_names_of(nb).empty());
  CHECK_THROWS_WITH_AS(MLP(4, {8, 0}), "MLP: hidden dims must be positive, got 0", ConfigError);
  Var bad = constant(Tensor::zeros({4, 10}));
  CHECK_THROWS_WITH_AS(m.forward(bad), "mlp: input [4, 10] has 10 features, MLP expects 16", ShapeError);
  end_step();
}

TEST_CASE("MLP gradient check on tiny configurations") {
  Rng rng(3);
  for (const char* act : {"sigmoid", "tanh", "dice"})
    for (bool bn : {true, false}) {
      CAPTURE(act);
      CAPTURE(bn);
      manual_seed(4);
      MLP m(3, {4, 3}, act, 0.0f, true, bn);
      Parameter x(random_tensor({5, 3}, rng, -2, 2));
      check_module_gradients(m, x, [&] { return m.forward(x); });
    }
  // Eval mode (batchnorm on running stats) and dropout in training with a fixed mask.
  manual_seed(5);
  MLP m(3, {4}, "tanh", 0.0f, true, true);
  Parameter x(random_tensor({5, 3}, rng));
  m.forward(x);  // move the running stats off their init
  end_step();
  m.eval();
  check_module_gradients(m, x, [&] { return m.forward(x); });
  manual_seed(6);
  MLP md(3, {6}, "sigmoid", 0.3f, true, false);
  check_module_gradients(md, x, [&] {
    manual_seed(7);  // the same dropout mask on every evaluation
    return md.forward(x);
  });
}

TEST_CASE("MLP fused path equals the op-by-op composition (relu and prelu kinks)") {
  Rng rng(8);
  for (const char* act : {"relu", "prelu"})
    for (bool bn : {true, false}) {
      CAPTURE(act);
      CAPTURE(bn);
      manual_seed(9);
      MLP m(5, {7, 6}, act, 0.0f, true, bn);
      // Make prelu slopes distinct so a mix-up would show.
      for (auto& kv : m.named_parameters())
        if (kv.second->numel() == 1 && kv.first.find("weight") != std::string::npos) kv.second->value().f32()[0] = 0.1f;
      Parameter x(random_tensor({9, 5}, rng, -2, 2));
      const Tensor seed = random_tensor({9, 1}, rng);
      Var y = m.forward(x);
      const Tensor yv = y.value().clone();
      tape().backward(y, seed);
      std::vector<Tensor> fused;
      for (Parameter* p : m.parameters()) {
        fused.push_back(p->grad().clone());
        p->zero_grad();
      }
      end_step();
      // The same network from ops, reading the module's parameters in Sequential order.
      auto ps = m.parameters();
      std::vector<Tensor*> bufs;
      for (auto& kv : m.named_buffers()) bufs.push_back(kv.second);
      // Undo the running-stat update of the first pass so both passes see the same state.
      for (std::size_t i = 0; i < bufs.size(); ++i) bufs[i]->fill_(i % 2 == 0 ? 0.0f : 1.0f);
      Var h = x;
      std::size_t k = 0, b = 0;
      for (int layer = 0; layer < 2; ++layer) {
        h = linear(h, *ps[k], *ps[k + 1]);
        k += 2;
        if (bn) {
          h = batch_norm1d(h, *ps[k], *ps[k + 1], *bufs[b], *bufs[b + 1], true);
          k += 2;
          b += 2;
        }
        if (std::string(act) == "relu") h = relu(h);
        else h = prelu(h, *ps[k++]);
      }
      h = linear(h, *ps[k], *ps[k + 1]);
      for (int i = 0; i < 9; ++i) CHECK(h.value().f32()[i] == doctest::Approx(yv.f32()[i]).epsilon(1e-5));
      tape().backward(h, seed);
      for (std::size_t i = 0; i < ps.size(); ++i)
        for (std::int64_t j = 0; j < ps[i]->numel(); ++j)
          CHECK(ps[i]->grad().f32()[j] == doctest::Approx(fused[i].f32()[j]).epsilon(1e-4).scale(1e-5));
      end_step();
    }
}

TEST_CASE("MLP accepts [N, L, in] by flattening rows") {
  Rng rng(10);
  Tensor x = random_tensor({2, 3, 4}, rng);
  for (bool bn : {false, true}) {
    manual_seed(11);
    MLP m(4, {5}, "relu", 0.0f, false, bn);
    Var y3 = m.forward(constant(x));
    CHECK(y3.shape() == Shape{2, 3, 5});
    Var y2 = m.forward(constant(x.reshape({6, 4})));
    CHECK(y2.shape() == Shape{6, 5});
    for (int i = 0; i < 30; ++i) CHECK(y3.value().f32()[i] == y2.value().f32()[i]);
    end_step();
  }
}

TEST_CASE("a steady-state MLP training step performs no heap allocation") {
  Rng rng(14);
  const Tensor x = random_tensor({64, 12}, rng), seed = random_tensor({64, 1}, rng);
  for (const char* act : {"prelu", "relu", "dice"})
    for (bool bn : {true, false}) {
      CAPTURE(act);
      CAPTURE(bn);
      MLP m(12, {32, 16}, act, 0.2f, true, bn);
      const std::vector<Parameter*> ps = m.parameters();
      auto step = [&] {
        for (Parameter* p : ps) p->zero_grad();
        Var y = m.forward(constant(x));
        tape().backward(y, seed);
        end_step();
      };
      for (int i = 0; i < 3; ++i) step();  // the arena and the tape reach their steady size
      const long before = rechub::testing::allocations();
      for (int i = 0; i < 5; ++i) step();
      CHECK(rechub::testing::allocations() - before == 0);
    }
}

TEST_CASE("a small MLP fits a toy regression with plain SGD") {
  // y = sin(2 x0) + x1^2 - 0.5 x0 x1 on 256 points; full-batch SGD on the mean squared error.
  // One thread: the test is about learning, not threading, and 800 fork/joins of tiny work are
  // slow on a shared, loaded machine.
  Rng rng(12);
  const std::int64_t N = 256;
  Tensor x = random_tensor({N, 2}, rng), target = Tensor::empty({N, 1});
  for (std::int64_t i = 0; i < N; ++i) {
    const float a = x.f32()[2 * i], b = x.f32()[2 * i + 1];
    target.f32()[i] = std::sin(2 * a) + b * b - 0.5f * a * b;
  }
  const int saved_threads = num_threads();
  set_num_threads(1);
  manual_seed(13);
  MLP m(2, {32, 32}, "relu");
  auto mse = [&](const Var& pred, Tensor* grad) {
    double loss = 0;
    for (std::int64_t i = 0; i < N; ++i) {
      const double d = double(pred.value().f32()[i]) - target.f32()[i];
      loss += d * d / N;
      if (grad) grad->f32()[i] = float(2 * d / N);
    }
    return loss;
  };
  Tensor grad = Tensor::empty({N, 1});
  double first = 0, last = 0;
  for (int step = 0; step < 400; ++step) {
    m.zero_grad();
    Var pred = m.forward(constant(x));
    last = mse(pred, &grad);
    if (step == 0) first = last;
    tape().backward(pred, grad);
    end_step();
    for (Parameter* p : m.parameters())
      for (std::int64_t i = 0; i < p->numel(); ++i) p->value().f32()[i] -= 0.1f * p->grad().f32()[i];
  }
  MESSAGE("toy regression MSE: first ", first, ", after 400 steps ", last);
  CHECK(last < first / 20);
  // The running stats tracked the (fixed) batch, so eval mode predicts about as well.
  m.eval();
  Var pred = m.forward(constant(x));
  CHECK(mse(pred, nullptr) < first / 10);
  end_step();
  set_num_threads(saved_threads);
}
