// GPU parity: every rechub::cuda launcher against the CPU op it mirrors, forward and backward.
//
// Each case builds random inputs (and random shapes where the shape matters: broadcast patterns,
// rows shorter and longer than a warp, row counts that split column reductions into chunks),
// runs the CPU op on the tape with a random output gradient, runs the kernels on device copies,
// and compares every output and every input gradient with |gpu - ref| <= atol + rtol |ref|,
// printing the first mismatches. Gradients on both sides start from the same random values, so
// the check also pins that the kernels ACCUMULATE (+=). Edge cases: empty history rows (all
// padding), fully masked softmax rows, zero-norm rows, a batch of 1, ties and NaN in top-k.
//
// Tolerances: elementwise results agree to float rounding (1e-6 / 1e-6). A reduction sums in a
// different order (block trees and row chunks vs. the CPU's serial loops), and float error grows
// like sqrt(n) eps |sum|: ~1e-4 for the 3000- to 5000-term sums here (broadcast gradients, hot
// embedding rows, column sums), hence 1e-4 / 1e-4 there; short row reductions and CUDA's
// expf / logf (<= 2 ulp vs. glibc) stay within 1e-5 / 1e-4; GEMMs (cuBLAS vs. Eigen) 1e-4 / 1e-4.
// Top-k indices must match exactly; the sorted embedding scatter must repeat bit for bit.
//
// Without a GPU (cudaGetDeviceCount fails or reports 0) main() prints "SKIPPED: ..." and exits 0.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "compare.hpp"
#include "gradcheck.hpp"
#include "rechub/cuda/cuda.hpp"
#include "rechub/loss/bce.hpp"
#include "rechub/loss/inbatch.hpp"
#include "rechub/loss/pairwise.hpp"
#include "rechub/loss/softmax_ce.hpp"
#include "rechub/ops/activation.hpp"
#include "rechub/ops/elementwise.hpp"
#include "rechub/ops/index.hpp"
#include "rechub/ops/norm.hpp"
#include "rechub/ops/reduce.hpp"
#include "rechub/ops/softmax.hpp"
#include "rechub/ops/topk.hpp"
#include "rechub/optim/adam.hpp"

namespace cu = rechub::cuda;
using cu::BinaryOp;
using namespace rechub;

static_assert(int(ActKind::none) == int(cu::Act::none) && int(ActKind::relu) == int(cu::Act::relu) &&
                  int(ActKind::prelu) == int(cu::Act::prelu) && int(ActKind::sigmoid) == int(cu::Act::sigmoid) &&
                  int(ActKind::tanh) == int(cu::Act::tanh),
              "cuda::Act must mirror ActKind");
static_assert(int(BagMode::sum) == int(cu::Bag::sum) && int(BagMode::mean) == int(cu::Bag::mean) &&
                  int(BagMode::concat) == int(cu::Bag::concat),
              "cuda::Bag must mirror BagMode");

namespace {

// ---- helpers -------------------------------------------------------------------------------------

Tensor rnd(const Shape& s, Rng& rng, float lo = -1.0f, float hi = 1.0f) { return testing::random_tensor(s, rng, lo, hi); }
Tensor rand_ints(const Shape& s, Rng& rng, std::int32_t lo, std::int32_t hi) {  // [lo, hi)
  Tensor t = Tensor::empty(s, DType::i32);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.i32()[i] = lo + static_cast<std::int32_t>(rng.below(hi - lo));
  return t;
}
Tensor dev(const Tensor& t) { return cu::to_device(t); }
float* fp(const Tensor& t) { return t.defined() ? t.f32() : nullptr; }
const std::int32_t* ip(const Tensor& t) { return t.defined() ? t.i32() : nullptr; }
Tensor dempty(const Shape& s, DType t = DType::f32) { return cu::empty(s, t); }

using testing::close;
using testing::same_bits;

bool same_ints(const std::string& what, const Tensor& gpu_any, const Tensor& ref) {
  const Tensor gpu = cu::to_host(gpu_any);
  std::int64_t bad = 0;
  for (std::int64_t i = 0; i < ref.numel(); ++i) {
    if (gpu.i32()[i] == ref.i32()[i]) continue;
    if (bad < 8)
      std::printf("  %s[%lld]: gpu %d  ref %d\n", what.c_str(), static_cast<long long>(i), gpu.i32()[i], ref.i32()[i]);
    ++bad;
  }
  if (bad) std::printf("  %s: %lld of %lld mismatch\n", what.c_str(), static_cast<long long>(bad), static_cast<long long>(ref.numel()));
  return bad == 0;
}

/// The CPU reference: f on Parameters holding `inputs` with gradients preset to grad0, backward
/// seeded with `seed`. Returns the output and every input's gradient (owned copies).
struct Ref {
  Tensor out;
  std::vector<Tensor> grads;
};
using OpFn = std::function<Var(const std::vector<Var>&)>;
Ref cpu_ref(const OpFn& f, const std::vector<Tensor>& inputs, const std::vector<Tensor>& grad0, const Tensor& seed) {
  std::vector<Parameter> params;
  params.reserve(inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    params.emplace_back(inputs[i].clone());
    if (i < grad0.size() && grad0[i].defined()) params.back().grad().copy_from(grad0[i]);
  }
  std::vector<Var> vars;
  for (auto& p : params) vars.push_back(p.var());
  Ref r;
  Var out = f(vars);
  r.out = out.value().clone();
  if (seed.defined()) tape().backward(out, seed);
  for (auto& p : params) r.grads.push_back(p.grad().clone());
  end_step();
  return r;
}
std::vector<Tensor> rand_like(const std::vector<Tensor>& ts, Rng& rng) {
  std::vector<Tensor> out;
  for (const auto& t : ts) out.push_back(rnd(t.shape(), rng));
  return out;
}

cu::BroadcastPlan to_plan(const detail::Broadcast& b) {
  cu::BroadcastPlan p;
  p.nd = b.nd;
  for (int k = 0; k < 4; ++k) {
    p.d[k] = b.d[k];
    p.sa[k] = b.sa[k];
    p.sb[k] = b.sb[k];
  }
  return p;
}
cu::MaskRows to_mask_rows(const detail::MaskRows& m) {
  cu::MaskRows r;
  for (int k = 0; k < 3; ++k) {
    r.e[k] = m.e[k];
    r.s[k] = m.s[k];
  }
  return r;
}
cu::Act to_act(ActKind k) { return static_cast<cu::Act>(static_cast<int>(k)); }

}  // namespace

// ---- runtime -------------------------------------------------------------------------------------

TEST_CASE("runtime: round trips, zeroing, copies and allocator reuse") {
  cu::init();
  MESSAGE("device: ", cu::describe());
  Rng rng(1);
  const Tensor h = rnd({3, 5}, rng);
  const Tensor d = cu::to_device(h);
  CHECK(d.device() == Device::cuda);
  CHECK(same_bits("f32 round trip", cu::to_host(d), h));
  const Tensor hi = rand_ints({7}, rng, -100, 100);
  CHECK(same_bits("i32 round trip", cu::to_host(cu::to_device(hi)), hi));
  const Tensor empty = Tensor::empty({0, 4});
  CHECK(cu::to_host(cu::to_device(empty)).numel() == 0);

  Tensor z = cu::zeros({4, 6});
  CHECK(close("zeros", z, Tensor::zeros({4, 6}), 0, 0));
  Tensor d2 = cu::empty({3, 5});
  cu::copy(d2, d);
  CHECK(same_bits("device copy", d2, h));
  Tensor h2 = Tensor::empty({3, 5});
  cu::copy(h2, d2);
  CHECK(same_bits("copy to host", h2, h));

  // Steady state: the same sizes again come from the cache, not from cudaMalloc.
  for (int i = 0; i < 2; ++i) Tensor::empty({1000, 37}, DType::f32, Device::cuda);
  const auto before = cu::allocator_stats();
  for (int i = 0; i < 10; ++i) {
    Tensor t = Tensor::empty({1000, 37}, DType::f32, Device::cuda);
    CHECK(cu::allocator_stats().in_use >= before.in_use + 1000 * 37 * 4);
  }
  const auto after = cu::allocator_stats();
  CHECK(after.device_mallocs == before.device_mallocs);
  CHECK(after.in_use == before.in_use);
  cu::empty_cache();
  CHECK(cu::allocator_stats().cached == 0);
  CHECK_THROWS_WITH_AS(cu::init(1000), "cuda::init: already running on device 0, cannot switch to device 1000",
                       CudaError);
}

TEST_CASE("gemm: cuBLAS row-major wrapper matches detail::gemm for every transpose") {
  Rng rng(2);
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (auto mnk : std::vector<std::array<std::int64_t, 3>>{{7, 9, 13}, {1, 5, 3}, {33, 1, 64}, {4, 6, 0}}) {
        const std::int64_t M = mnk[0], N = mnk[1], K = mnk[2];
        const Tensor A = ta ? rnd({K, M}, rng) : rnd({M, K}, rng), B = tb ? rnd({N, K}, rng) : rnd({K, N}, rng);
        const Tensor C0 = rnd({M, N}, rng);
        Tensor ref = C0.clone();
        detail::gemm(ta, tb, M, N, K, 0.75f, A.f32(), ta ? M : K, B.f32(), tb ? K : N, 0.5f, ref.f32(), N);
        Tensor dC = dev(C0);
        const Tensor dA = dev(A), dB = dev(B);
        cu::gemm(ta, tb, M, N, K, 0.75f, dA.f32(), ta ? M : K, dB.f32(), tb ? K : N, 0.5f, dC.f32(), N);
        CHECK(close("gemm ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) + " K=" + std::to_string(K), dC, ref,
                    1e-5, 1e-4));
      }
}

// ---- elementwise -----------------------------------------------------------------------------------

TEST_CASE("binary ops: every broadcast pattern, forward and reducing backward") {
  Rng rng(3);
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{7, 33}, {7, 33}},   {{5, 3, 17}, {17}},        {{4, 1}, {4, 9}},    {{1}, {6, 5}},
      {{3, 1, 4}, {1, 5, 4}}, {{1, 8}, {1, 8}},        {{2, 3, 4, 5}, {3, 1, 5}}, {{3000, 7}, {7}},
      {{2100, 3}, {2100, 1}}, {{0, 4}, {4}},           {{1}, {1}}};
  const BinaryOp ops[] = {BinaryOp::add, BinaryOp::sub, BinaryOp::mul, BinaryOp::div};
  for (const auto& c : cases)
    for (BinaryOp op : ops) {
      const std::string name = std::string(op == BinaryOp::add   ? "add"
                                           : op == BinaryOp::sub ? "sub"
                                           : op == BinaryOp::mul ? "mul"
                                                                 : "div") +
                               " " + c.first.str() + " " + c.second.str();
      CAPTURE(name);
      const Tensor A = rnd(c.first, rng), B = rnd(c.second, rng, 0.5f, 2.0f);
      const std::vector<Tensor> in = {A, B}, g0 = rand_like(in, rng);
      Shape os;
      REQUIRE(detail::broadcast_shape(A.shape(), B.shape(), os));
      const Tensor seed = rnd(os, rng);
      const Ref ref = cpu_ref(
          [op](const std::vector<Var>& v) {
            switch (op) {
              case BinaryOp::add:
                return add(v[0], v[1]);
              case BinaryOp::sub:
                return sub(v[0], v[1]);
              case BinaryOp::mul:
                return mul(v[0], v[1]);
              default:
                return div(v[0], v[1]);
            }
          },
          in, g0, seed);
      const cu::BroadcastPlan p = to_plan(detail::plan_broadcast(A.shape(), B.shape(), os));
      const Tensor dA = dev(A), dB = dev(B), dg = dev(seed), y = dempty(os);
      Tensor da = dev(g0[0]), db = dev(g0[1]);
      cu::binary_forward(op, fp(y), fp(dA), fp(dB), p);
      cu::binary_backward(op, fp(da), fp(db), fp(dg), fp(dA), fp(dB), fp(y), p);
      CHECK(close(name + " y", y, ref.out, 1e-6, 1e-6));
      CHECK(close(name + " da", da, ref.grads[0], 1e-4, 1e-4));
      CHECK(close(name + " db", db, ref.grads[1], 1e-4, 1e-4));
    }
  // broadcast_rows is the plan of [R, C] + [C].
  const Tensor A = rnd({6, 10}, rng), B = rnd({10}, rng);
  Tensor y = dempty({6, 10});
  cu::binary_forward(BinaryOp::add, fp(y), fp(dev(A)), fp(dev(B)), cu::broadcast_rows(6, 10));
  NoGrad ng;
  CHECK(close("broadcast_rows", y, add(constant(A), constant(B)).value().clone(), 0, 0));
  end_step();
}

TEST_CASE("scale and axpy") {
  Rng rng(4);
  const Tensor X = rnd({5, 77}, rng), g0 = rnd({5, 77}, rng), seed = rnd({5, 77}, rng);
  const Ref ref = cpu_ref([](const std::vector<Var>& v) { return scale(v[0], -1.7f); }, {X}, {g0}, seed);
  Tensor y = dempty(X.shape()), dx = dev(g0);
  cu::scale_forward(fp(y), fp(dev(X)), -1.7f, X.numel());
  cu::axpy(fp(dx), -1.7f, fp(dev(seed)), X.numel());
  CHECK(close("scale y", y, ref.out, 0, 0));
  CHECK(close("scale dx", dx, ref.grads[0], 1e-6, 1e-6));
}

TEST_CASE("activations: relu, sigmoid, tanh, prelu ([1] and [C] slopes)") {
  Rng rng(5);
  for (auto shape : std::vector<Shape>{{9, 13}, {1, 4}, {2500, 19}}) {
    Tensor X = rnd(shape, rng, -4.0f, 4.0f);
    for (std::int64_t i = 0; i < X.numel(); i += 7) X.f32()[i] = 0.0f;  // the kink: derivative from the left
    const std::int64_t C = shape[-1], rows = X.numel() / C;
    const Tensor seed = rnd(shape, rng), g0 = rnd(shape, rng);
    for (ActKind k : {ActKind::relu, ActKind::sigmoid, ActKind::tanh}) {
      const std::string name = std::string(act_name(k)) + " " + shape.str();
      const Ref ref = cpu_ref(
          [k](const std::vector<Var>& v) {
            return k == ActKind::relu ? relu(v[0]) : k == ActKind::sigmoid ? sigmoid(v[0]) : rechub::tanh(v[0]);
          },
          {X}, {g0}, seed);
      Tensor y = dempty(shape), dx = dev(g0);
      const Tensor dX = dev(X);
      cu::bias_act_forward(to_act(k), fp(y), nullptr, fp(dX), nullptr, nullptr, 0, rows, C);
      cu::bias_act_backward(to_act(k), fp(dx), nullptr, nullptr, nullptr, fp(dev(seed)), nullptr, fp(y), nullptr, 0,
                            rows, C);
      CHECK(close(name + " y", y, ref.out, 1e-6, 1e-5));
      CHECK(close(name + " dx", dx, ref.grads[0], 1e-6, 1e-5));
    }
    for (std::int64_t na : {std::int64_t(1), C}) {
      const std::string name = "prelu " + shape.str() + " slope [" + std::to_string(na) + "]";
      const Tensor S = rnd({na}, rng, 0.0f, 0.5f), s0 = rnd({na}, rng);
      const Ref ref = cpu_ref([](const std::vector<Var>& v) { return prelu(v[0], v[1]); }, {X, S}, {g0, s0}, seed);
      Tensor y = dempty(shape), dx = dev(g0), ds = dev(s0);
      const Tensor dX = dev(X), dS = dev(S);
      cu::bias_act_forward(cu::Act::prelu, fp(y), nullptr, fp(dX), nullptr, fp(dS), na, rows, C);
      cu::bias_act_backward(cu::Act::prelu, fp(dx), nullptr, nullptr, fp(ds), fp(dev(seed)), fp(dX), fp(y), fp(dS), na,
                            rows, C);
      CHECK(close(name + " y", y, ref.out, 1e-6, 1e-6));
      CHECK(close(name + " dx", dx, ref.grads[0], 1e-6, 1e-6));
      CHECK(close(name + " dslope", ds, ref.grads[1], 1e-4, 1e-4));
    }
  }
}

TEST_CASE("linear_act: cuBLAS GEMM + fused bias/activation, every activation, with and without bias") {
  Rng rng(6);
  struct Dims {
    std::int64_t rows, in, out;
  };
  for (Dims dm : {Dims{33, 40, 24}, Dims{1, 7, 5}, Dims{1500, 16, 8}})
    for (ActKind k : {ActKind::none, ActKind::relu, ActKind::prelu, ActKind::sigmoid, ActKind::tanh})
      for (bool with_bias : {true, false}) {
        const std::int64_t na = (dm.out % 2) ? 1 : dm.out;
        const std::string name = std::string("linear_act ") + act_name(k) + (with_bias ? " bias" : " no-bias") + " [" +
                                 std::to_string(dm.rows) + "," + std::to_string(dm.in) + "->" + std::to_string(dm.out) +
                                 "]";
        std::vector<Tensor> in = {rnd({dm.rows, dm.in}, rng), rnd({dm.out, dm.in}, rng, -0.5f, 0.5f)};
        if (with_bias) in.push_back(rnd({dm.out}, rng));
        const bool prelu_ = k == ActKind::prelu;
        if (prelu_) in.push_back(rnd({na}, rng, 0.0f, 0.5f));
        const std::vector<Tensor> g0 = rand_like(in, rng);
        const Tensor seed = rnd({dm.rows, dm.out}, rng);
        const Ref ref = cpu_ref(
            [&](const std::vector<Var>& v) {
              const Var b = with_bias ? v[2] : Var();
              const Var s = prelu_ ? v[with_bias ? 3 : 2] : Var();
              return linear_act(v[0], v[1], b, k, s);
            },
            in, g0, seed);
        std::vector<Tensor> d_in, d_g;
        for (std::size_t i = 0; i < in.size(); ++i) {
          d_in.push_back(dev(in[i]));
          d_g.push_back(dev(g0[i]));
        }
        const int bi = with_bias ? 2 : -1, si = prelu_ ? (with_bias ? 3 : 2) : -1;
        Tensor y = dempty({dm.rows, dm.out}), z = dempty({dm.rows, dm.out});
        cu::linear_act_forward(to_act(k), fp(y), fp(z), fp(d_in[0]), fp(d_in[1]), bi >= 0 ? fp(d_in[bi]) : nullptr,
                               si >= 0 ? fp(d_in[si]) : nullptr, prelu_ ? na : 0, dm.rows, dm.in, dm.out);
        cu::linear_act_backward(to_act(k), fp(d_g[0]), fp(d_g[1]), bi >= 0 ? fp(d_g[bi]) : nullptr,
                                si >= 0 ? fp(d_g[si]) : nullptr, fp(dev(seed)), fp(d_in[0]), fp(d_in[1]), fp(z), fp(y),
                                si >= 0 ? fp(d_in[si]) : nullptr, prelu_ ? na : 0, dm.rows, dm.in, dm.out);
        CHECK(close(name + " y", y, ref.out, 1e-4, 1e-4));
        CHECK(close(name + " dx", d_g[0], ref.grads[0], 1e-4, 1e-4));
        CHECK(close(name + " dW", d_g[1], ref.grads[1], 1e-3, 1e-4));
        if (bi >= 0) CHECK(close(name + " db", d_g[bi], ref.grads[bi], 1e-4, 1e-4));
        if (si >= 0) CHECK(close(name + " dslope", d_g[si], ref.grads[si], 1e-3, 1e-4));
      }
}

// ---- reductions ----------------------------------------------------------------------------------

TEST_CASE("sum / mean: all elements and over each dim") {
  Rng rng(7);
  for (auto shape : std::vector<Shape>{{4, 5, 6}, {3, 300}, {1, 1}, {2, 70, 1}}) {
    const Tensor X = rnd(shape, rng), g0 = rnd(shape, rng);
    for (bool average : {false, true}) {
      const std::string name = std::string(average ? "mean " : "sum ") + shape.str();
      const Tensor seed = rnd({1}, rng);
      const Ref ref = cpu_ref([average](const std::vector<Var>& v) { return average ? mean(v[0]) : sum(v[0]); }, {X},
                              {g0}, seed);
      const float sc = average ? 1.0f / static_cast<float>(X.numel()) : 1.0f;
      Tensor y = dempty({1}), dx = dev(g0);
      cu::sum_all_forward(fp(y), fp(dev(X)), X.numel(), sc);
      cu::sum_all_backward(fp(dx), fp(dev(seed)), X.numel(), sc);
      CHECK(close(name + " all y", y, ref.out, 1e-6, 1e-5));
      CHECK(close(name + " all dx", dx, ref.grads[0], 1e-6, 1e-6));
      for (int d = 0; d < shape.ndim(); ++d) {
        const std::string nd = name + " dim " + std::to_string(d);
        std::int64_t outer = 1, inner = 1;
        for (int i = 0; i < d; ++i) outer *= shape[i];
        for (int i = d + 1; i < shape.ndim(); ++i) inner *= shape[i];
        const std::int64_t len = shape[d];
        Shape ys;
        for (int i = 0; i < shape.ndim(); ++i)
          if (i != d) ys.push(shape[i]);
        if (ys.ndim() == 0) ys.push(1);
        const Tensor s2 = rnd(ys, rng);
        const Ref r2 = cpu_ref(
            [average, d](const std::vector<Var>& v) { return average ? mean(v[0], d) : sum(v[0], d); }, {X}, {g0}, s2);
        const float sc2 = average ? 1.0f / static_cast<float>(len) : 1.0f;
        Tensor y2 = dempty(ys), dx2 = dev(g0);
        cu::sum_dim_forward(fp(y2), fp(dev(X)), outer, len, inner, sc2);
        cu::sum_dim_backward(fp(dx2), fp(dev(s2)), outer, len, inner, sc2);
        CHECK(close(nd + " y", y2, r2.out, 1e-4, 1e-4));
        CHECK(close(nd + " dx", dx2, r2.grads[0], 1e-6, 1e-6));
      }
    }
  }
}

TEST_CASE("masked_mean: empty rows give zeros and no gradient") {
  Rng rng(8);
  const std::int64_t B = 5, L = 7, D = 6;
  Tensor mask = rand_ints({B, L}, rng, 0, 2);
  for (std::int64_t l = 0; l < L; ++l) {
    mask.i32()[2 * L + l] = 0;  // an empty history
    mask.i32()[4 * L + l] = 1;
  }
  const Tensor X = rnd({B, L, D}, rng), g0 = rnd({B, L, D}, rng), seed = rnd({B, D}, rng);
  const Ref ref = cpu_ref([&](const std::vector<Var>& v) { return masked_mean(v[0], mask); }, {X}, {g0}, seed);
  Tensor y = dempty({B, D}), w = dempty({B, L}), dx = dev(g0);
  cu::masked_mean_forward(fp(y), fp(w), fp(dev(X)), ip(dev(mask)), B, L, D);
  cu::masked_mean_backward(fp(dx), fp(dev(seed)), fp(w), B, L, D);
  CHECK(close("masked_mean y", y, ref.out, 1e-6, 1e-5));
  CHECK(close("masked_mean dx", dx, ref.grads[0], 1e-6, 1e-5));
}

// ---- softmax -------------------------------------------------------------------------------------

TEST_CASE("softmax / log_softmax: masks (same, broadcast, fully masked rows), short and long rows") {
  Rng rng(9);
  struct Case {
    Shape x, mask;  // mask ndim 0: no mask
  };
  const std::vector<Case> cases = {{{6, 10}, {}},        {{6, 10}, {6, 10}},   {{2, 3, 9}, {2, 1, 9}},
                                   {{4, 9}, {9}},         {{5, 1}, {5, 1}},     {{3, 1500}, {3, 1500}},
                                   {{1, 5}, {}},          {{2, 2, 3, 40}, {2, 1, 1, 40}}};
  for (const auto& c : cases)
    for (bool log : {false, true}) {
      const std::string name = std::string(log ? "log_softmax " : "softmax ") + c.x.str() + " mask " + c.mask.str();
      CAPTURE(name);
      const Tensor X = rnd(c.x, rng, -5.0f, 5.0f), g0 = rnd(c.x, rng), seed = rnd(c.x, rng);
      Tensor mask;
      if (c.mask.ndim()) {
        mask = rand_ints(c.mask, rng, 0, 2);
        const std::int64_t L = c.mask[-1];
        if (mask.numel() > L)  // (a single mask row serves every row: leave it random)
          for (std::int64_t l = 0; l < L; ++l) {
            mask.i32()[l] = 0;      // the first mask row fully masked
            mask.i32()[L + l] = 1;  // the second fully kept
          }
      }
      const Ref ref = cpu_ref(
          [&](const std::vector<Var>& v) { return log ? log_softmax(v[0], mask) : softmax(v[0], mask); }, {X}, {g0},
          seed);
      const std::int64_t L = c.x[-1], rows = X.numel() / L;
      const cu::MaskRows mr = mask.defined() ? to_mask_rows(detail::plan_mask("softmax", X, mask)) : cu::MaskRows{};
      const Tensor dmask = mask.defined() ? dev(mask) : Tensor();
      Tensor y = dempty(c.x), dx = dev(g0);
      cu::softmax_forward(log, fp(y), fp(dev(X)), ip(dmask), mr, rows, L);
      cu::softmax_backward(log, fp(dx), fp(dev(seed)), fp(y), ip(dmask), mr, rows, L);
      CHECK(close(name + " y", y, ref.out, 2e-5, 1e-5));  // log_softmax near 0: lse's rounding is absolute
      CHECK(close(name + " dx", dx, ref.grads[0], 2e-5, 1e-4));
    }
}

// ---- normalisation -------------------------------------------------------------------------------

TEST_CASE("layer_norm: with and without affine, short and long rows, a single row") {
  Rng rng(10);
  for (auto shape : std::vector<Shape>{{7, 33}, {5, 300}, {1, 8}, {1100, 12}})
    for (bool affine : {true, false}) {
      const std::string name = "layer_norm " + shape.str() + (affine ? " affine" : "");
      const std::int64_t D = shape[-1], rows = shape.numel() / D;
      std::vector<Tensor> in = {rnd(shape, rng, -3.0f, 3.0f)};
      if (affine) {
        in.push_back(rnd({D}, rng, 0.5f, 1.5f));
        in.push_back(rnd({D}, rng));
      }
      const std::vector<Tensor> g0 = rand_like(in, rng);
      const Tensor seed = rnd(shape, rng);
      const Ref ref = cpu_ref(
          [affine](const std::vector<Var>& v) {
            return affine ? layer_norm(v[0], v[1], v[2], 1e-5f) : layer_norm(v[0], Var(), Var(), 1e-5f);
          },
          in, g0, seed);
      std::vector<Tensor> d_in, d_g;
      for (std::size_t i = 0; i < in.size(); ++i) {
        d_in.push_back(dev(in[i]));
        d_g.push_back(dev(g0[i]));
      }
      Tensor y = dempty(shape), stats = dempty({rows, 2});
      cu::layer_norm_forward(fp(y), fp(stats), fp(d_in[0]), affine ? fp(d_in[1]) : nullptr,
                             affine ? fp(d_in[2]) : nullptr, rows, D, 1e-5f);
      cu::layer_norm_backward(fp(d_g[0]), affine ? fp(d_g[1]) : nullptr, affine ? fp(d_g[2]) : nullptr,
                              fp(dev(seed)), fp(d_in[0]), fp(stats), affine ? fp(d_in[1]) : nullptr, rows, D);
      CHECK(close(name + " y", y, ref.out, 1e-5, 1e-4));
      CHECK(close(name + " dx", d_g[0], ref.grads[0], 1e-4, 1e-4));
      if (affine) {
        CHECK(close(name + " dgamma", d_g[1], ref.grads[1], 1e-4, 1e-4));
        CHECK(close(name + " dbeta", d_g[2], ref.grads[2], 1e-4, 1e-4));
      }
    }
}

TEST_CASE("batch_norm1d: train and eval, every fused activation, running stats, affine off") {
  Rng rng(11);
  struct Dims {
    std::int64_t N, C;
  };
  for (Dims dm : {Dims{37, 11}, Dims{2, 3}, Dims{2100, 5}})
    for (ActKind k : {ActKind::none, ActKind::relu, ActKind::prelu, ActKind::sigmoid, ActKind::tanh})
      for (int mode = 0; mode < 4; ++mode) {  // 0 train, 1 eval, 2 train without running stats, 3 train affine off
        const bool training = mode != 1, running = mode != 2, affine = mode != 3, prelu_ = k == ActKind::prelu;
        const std::int64_t N = dm.N, C = dm.C, na = prelu_ ? (C % 2 ? 1 : C) : 0;
        const std::string name = std::string("batch_norm1d ") + act_name(k) + " mode " + std::to_string(mode) + " [" +
                                 std::to_string(N) + "," + std::to_string(C) + "]";
        std::vector<Tensor> in = {rnd({N, C}, rng, -2.0f, 3.0f)};
        if (affine) {
          in.push_back(rnd({C}, rng, 0.5f, 1.5f));
          in.push_back(rnd({C}, rng));
        }
        if (prelu_) in.push_back(rnd({na}, rng, 0.0f, 0.5f));
        const std::vector<Tensor> g0 = rand_like(in, rng);
        const Tensor seed = rnd({N, C}, rng);
        const Tensor rm0 = rnd({C}, rng), rv0 = rnd({C}, rng, 0.5f, 2.0f);
        Tensor rm = running ? rm0.clone() : Tensor(), rv = running ? rv0.clone() : Tensor();
        const int gi = affine ? 1 : -1, bi = affine ? 2 : -1, si = prelu_ ? (affine ? 3 : 1) : -1;
        const Ref ref = cpu_ref(
            [&](const std::vector<Var>& v) {
              return batch_norm1d_act(v[0], gi >= 0 ? v[gi] : Var(), bi >= 0 ? v[bi] : Var(), rm, rv, training, 0.1f,
                                      1e-5f, k, si >= 0 ? v[si] : Var());
            },
            in, g0, seed);
        std::vector<Tensor> d_in, d_g;
        for (std::size_t i = 0; i < in.size(); ++i) {
          d_in.push_back(dev(in[i]));
          d_g.push_back(dev(g0[i]));
        }
        Tensor drm = running ? dev(rm0) : Tensor(), drv = running ? dev(rv0) : Tensor();
        Tensor y = dempty({N, C}), cols = dempty({6, C});
        auto at = [&](const std::vector<Tensor>& v, int i) { return i >= 0 ? fp(v[static_cast<std::size_t>(i)]) : nullptr; };
        cu::batch_norm1d_forward(to_act(k), fp(y), fp(cols), fp(drm), fp(drv), fp(d_in[0]), at(d_in, gi), at(d_in, bi),
                                 at(d_in, si), na, N, C, training, 0.1f, 1e-5f);
        cu::batch_norm1d_backward(to_act(k), fp(d_g[0]), at(d_g, gi), at(d_g, bi), at(d_g, si), fp(dev(seed)),
                                  fp(d_in[0]), fp(y), fp(cols), na, N, C, training);
        CHECK(close(name + " y", y, ref.out, 1e-5, 1e-4));
        CHECK(close(name + " dx", d_g[0], ref.grads[0], 1e-4, 1e-4));
        if (gi >= 0) CHECK(close(name + " dgamma", d_g[1], ref.grads[1], 1e-4, 1e-4));
        if (bi >= 0) CHECK(close(name + " dbeta", d_g[2], ref.grads[2], 1e-4, 1e-4));
        if (si >= 0) CHECK(close(name + " dslope", d_g[static_cast<std::size_t>(si)], ref.grads[static_cast<std::size_t>(si)], 1e-3, 1e-4));
        if (running) {
          CHECK(close(name + " running_mean", drm, rm, 1e-6, 1e-5));
          CHECK(close(name + " running_var", drv, rv, 1e-6, 1e-5));
        }
      }
}

TEST_CASE("l2_normalize: zero rows take the eps branch") {
  Rng rng(12);
  for (auto shape : std::vector<Shape>{{6, 16}, {1, 3}, {4, 500}}) {
    Tensor X = rnd(shape, rng);
    const std::int64_t D = shape[-1], rows = X.numel() / D;
    if (rows > 2)
      for (std::int64_t k = 0; k < D; ++k) X.f32()[2 * D + k] = 0.0f;
    const Tensor g0 = rnd(shape, rng), seed = rnd(shape, rng);
    const Ref ref = cpu_ref([](const std::vector<Var>& v) { return l2_normalize(v[0], 1e-12f); }, {X}, {g0}, seed);
    Tensor y = dempty(shape), denom = dempty({rows}), dx = dev(g0);
    cu::l2_normalize_forward(fp(y), fp(denom), fp(dev(X)), rows, D, 1e-12f);
    cu::l2_normalize_backward(fp(dx), fp(dev(seed)), fp(y), fp(denom), rows, D, 1e-12f);
    CHECK(close("l2_normalize y " + shape.str(), y, ref.out, 1e-6, 1e-5));
    CHECK(close("l2_normalize dx " + shape.str(), dx, ref.grads[0], 1e-5, 1e-4));
  }
}

// ---- embeddings ----------------------------------------------------------------------------------

namespace {
/// The CPU table gradient and touched rows of one lookup, from a Parameter tracking rows.
struct EmbRef {
  Tensor out, grad;
  std::vector<std::uint8_t> touched;
};
EmbRef embedding_ref(const Tensor& table, const Tensor& grad0, const std::function<Var(const Var&)>& f,
                     const Tensor& seed) {
  Parameter t(table.clone());
  t.grad().copy_from(grad0);
  t.track_rows(true);
  Var out = f(t.var());
  EmbRef r;
  r.out = out.value().clone();
  tape().backward(out, seed);
  r.grad = t.grad().clone();
  r.touched = t.touched_rows()->marked;
  end_step();
  return r;
}
bool same_touched(const std::string& what, const Tensor& flags_dev, const std::vector<std::uint8_t>& ref) {
  std::vector<std::uint8_t> h(ref.size());
  const Tensor t = cu::to_host(flags_dev);  // bytes held in an int32 tensor (see touched_flags)
  std::memcpy(h.data(), t.raw(), ref.size());
  std::int64_t bad = 0;
  for (std::size_t i = 0; i < ref.size(); ++i)
    if ((h[i] != 0) != (ref[i] != 0)) {
      if (bad < 8) std::printf("  %s: row %zu gpu %d ref %d\n", what.c_str(), i, h[i], ref[i]);
      ++bad;
    }
  return bad == 0;
}
/// A zeroed device byte array of V flags (held in an int32 tensor rounded up).
Tensor touched_flags(std::int64_t V) { return cu::zeros({(V + 3) / 4}, DType::i32); }
std::uint8_t* flags_ptr(const Tensor& t) { return static_cast<std::uint8_t*>(t.raw()); }
}  // namespace

TEST_CASE("embedding_bag and gather_rows: padding rows, a batch of 1, hot ids; sorted and atomic scatter") {
  Rng rng(13);
  struct Case {
    std::int64_t V, D, B, L;
  };
  for (Case c : {Case{50, 12, 6, 5}, Case{40, 70, 1, 1}, Case{1000, 32, 300, 50}, Case{9, 3, 4, 8}}) {
    Tensor ids = rand_ints({c.B, c.L}, rng, 0, static_cast<std::int32_t>(c.V));
    for (std::int64_t i = 0; i < ids.numel(); i += 3) ids.i32()[i] = 7 % c.V;  // a hot row
    for (std::int64_t l = 0; l < c.L; ++l) ids.i32()[l] = 0;                    // row 0: empty history (padding only)
    if (c.B > 1) ids.i32()[c.L] = 5 % c.V;                                      // row 1 starts with a real id
    const Tensor table = rnd({c.V, c.D}, rng), g0 = rnd({c.V, c.D}, rng);
    const Tensor d_table = dev(table), d_ids = dev(ids);
    for (BagMode mode : {BagMode::sum, BagMode::mean, BagMode::concat})
      for (std::int32_t pad : {0, -1}) {
        const bool cat = mode == BagMode::concat;
        const Shape ys = cat ? Shape{c.B, c.L, c.D} : Shape{c.B, c.D};
        const std::string name = std::string("embedding_bag ") + bag_mode_name(mode) + " pad " + std::to_string(pad) +
                                 " V" + std::to_string(c.V) + " D" + std::to_string(c.D) + " B" + std::to_string(c.B) +
                                 " L" + std::to_string(c.L);
        const Tensor seed = rnd(ys, rng);
        const EmbRef ref =
            embedding_ref(table, g0, [&](const Var& t) { return embedding_bag(t, ids, mode, pad); }, seed);
        Tensor y = dempty(ys), scale = dempty({c.B});
        cu::embedding_bag_forward(static_cast<cu::Bag>(mode), fp(y), cat ? nullptr : fp(scale), fp(d_table), ip(d_ids),
                                  c.B, c.L, c.D, pad);
        CHECK(close(name + " y", y, ref.out, 1e-6, 1e-6));
        Tensor first;
        for (cu::Scatter how : {cu::Scatter::sorted, cu::Scatter::atomic, cu::Scatter::sorted}) {
          const std::string hn = name + (how == cu::Scatter::sorted ? " sorted" : " atomic");
          Tensor dT = dev(g0), flags = touched_flags(c.V);
          cu::embedding_backward(how, fp(dT), flags_ptr(flags), fp(dev(seed)), ip(d_ids), cat ? nullptr : fp(scale),
                                 c.B * c.L, cat ? 1 : c.L, c.V, c.D, pad);
          CHECK(close(hn + " dtable", dT, ref.grad, 1e-4, 1e-4));
          CHECK(same_touched(hn + " touched", flags, ref.touched));
          if (how == cu::Scatter::sorted) {
            if (first.defined()) CHECK(same_bits(hn + " run-to-run", dT, first));
            else first = cu::to_host(dT);
          }
        }
      }
    // gather_rows over the flattened ids (no padding skipped).
    const Tensor flat = ids.reshape({c.B * c.L});
    const Tensor seed = rnd({c.B * c.L, c.D}, rng);
    const EmbRef ref = embedding_ref(table, g0, [&](const Var& t) { return gather_rows(t, flat); }, seed);
    Tensor y = dempty({c.B * c.L, c.D});
    cu::gather_rows_forward(fp(y), fp(d_table), ip(d_ids), c.B * c.L, c.D);
    CHECK(close("gather_rows y", y, ref.out, 0, 0));
    for (cu::Scatter how : {cu::Scatter::sorted, cu::Scatter::atomic}) {
      Tensor dT = dev(g0), flags = touched_flags(c.V);
      cu::embedding_backward(how, fp(dT), flags_ptr(flags), fp(dev(seed)), ip(d_ids), nullptr, c.B * c.L, 1, c.V, c.D,
                             -1);
      CHECK(close("gather_rows dtable", dT, ref.grad, 1e-4, 1e-4));
      CHECK(same_touched("gather_rows touched", flags, ref.touched));
    }
  }
}

// ---- losses --------------------------------------------------------------------------------------

TEST_CASE("bce_with_logits and bce: extreme logits, probabilities at 0 and 1") {
  Rng rng(14);
  for (std::int64_t N : {1, 37, 3000}) {
    Tensor X = rnd({N}, rng, -20.0f, 20.0f), label = rnd({N}, rng, 0.0f, 1.0f);
    for (std::int64_t i = 0; i < N; i += 2) label.f32()[i] = float(i % 4 == 0);
    if (N > 3) {
      X.f32()[1] = 95.0f;
      X.f32()[3] = -95.0f;
    }
    const Tensor g0 = rnd({N}, rng), seed = rnd({1}, rng, 0.5f, 1.5f);
    const Ref ref = cpu_ref([&](const std::vector<Var>& v) { return bce_with_logits(v[0], label); }, {X}, {g0}, seed);
    Tensor loss = dempty({1}), dx = dev(g0);
    const Tensor dX = dev(X), dl = dev(label);
    cu::bce_with_logits_forward(fp(loss), fp(dX), fp(dl), N);
    cu::bce_with_logits_backward(fp(dx), fp(dev(seed)), fp(dX), fp(dl), N);
    CHECK(close("bce_with_logits loss N" + std::to_string(N), loss, ref.out, 1e-6, 1e-5));
    CHECK(close("bce_with_logits dx N" + std::to_string(N), dx, ref.grads[0], 1e-7, 1e-5));

    Tensor P = rnd({N}, rng, 0.0f, 1.0f);
    if (N > 3) {
      P.f32()[0] = 0.0f;  // label 1 there: log clamped at -100
      P.f32()[2] = 1.0f;
      P.f32()[1] = 0.0f;
    }
    const Ref rb = cpu_ref([&](const std::vector<Var>& v) { return bce(v[0], label); }, {P}, {g0}, seed);
    Tensor lb = dempty({1}), dp = dev(g0);
    const Tensor dP = dev(P);
    cu::bce_forward(fp(lb), fp(dP), fp(dl), N);
    cu::bce_backward(fp(dp), fp(dev(seed)), fp(dP), fp(dl), N);
    CHECK(close("bce loss N" + std::to_string(N), lb, rb.out, 1e-5, 1e-5));
    CHECK(close("bce dp N" + std::to_string(N), dp, rb.grads[0], 1e-6, 1e-5));
  }
}

TEST_CASE("bpr: one negative per row ([N] and [N, 1] shapes) and k negatives") {
  Rng rng(15);
  struct Case {
    Shape pos, neg;
  };
  for (const Case& c : std::vector<Case>{{{9}, {9}}, {{9, 1}, {9, 1}}, {{12}, {12, 5}}, {{1}, {1, 3}}, {{500}, {500, 20}}}) {
    const std::int64_t N = c.pos[0], k = c.neg.ndim() == 1 ? 1 : c.neg[1];
    const Tensor pos = rnd(c.pos, rng, -50.0f, 50.0f), neg = rnd(c.neg, rng, -50.0f, 50.0f);
    const std::vector<Tensor> in = {pos, neg}, g0 = rand_like(in, rng);
    const Tensor seed = rnd({1}, rng, 0.5f, 1.5f);
    const Ref ref = cpu_ref([](const std::vector<Var>& v) { return bpr(v[0], v[1]); }, in, g0, seed);
    Tensor loss = dempty({1}), dpos = dev(g0[0]), dneg = dev(g0[1]);
    const Tensor dP = dev(pos), dN = dev(neg);
    cu::bpr_forward(fp(loss), fp(dP), fp(dN), N, k);
    cu::bpr_backward(fp(dpos), fp(dneg), fp(dev(seed)), fp(dP), fp(dN), N, k);
    const std::string name = "bpr " + c.pos.str() + " " + c.neg.str();
    CHECK(close(name + " loss", loss, ref.out, 1e-5, 1e-5));
    CHECK(close(name + " dpos", dpos, ref.grads[0], 1e-6, 1e-5));
    CHECK(close(name + " dneg", dneg, ref.grads[1], 1e-6, 1e-5));
  }
}

TEST_CASE("softmax cross-entropy: targets, list-wise (class 0), temperature, C = 1 and long rows") {
  Rng rng(16);
  struct Case {
    std::int64_t N, C;
    float T;
    bool listwise;
  };
  for (Case c : {Case{9, 13, 1.0f, false}, Case{9, 13, 0.5f, false}, Case{6, 8, 1.0f, true}, Case{6, 8, 0.2f, true},
                 Case{1, 1, 1.0f, false}, Case{4, 2000, 1.0f, false}}) {
    const std::string name = std::string(c.listwise ? "listwise_softmax_ce" : "softmax_cross_entropy") + " [" +
                             std::to_string(c.N) + "," + std::to_string(c.C) + "] T " + std::to_string(c.T);
    const Tensor X = rnd({c.N, c.C}, rng, -4.0f, 4.0f), g0 = rnd({c.N, c.C}, rng), seed = rnd({1}, rng, 0.5f, 1.5f);
    const Tensor target = rand_ints({c.N}, rng, 0, static_cast<std::int32_t>(c.C));
    const Ref ref = cpu_ref(
        [&](const std::vector<Var>& v) {
          return c.listwise ? listwise_softmax_ce(v[0], c.T) : softmax_cross_entropy(v[0], target, c.T);
        },
        {X}, {g0}, seed);
    const Tensor dX = dev(X), dt = c.listwise ? Tensor() : dev(target);
    Tensor loss = dempty({1}), lse = dempty({c.N}), dx = dev(g0);
    cu::softmax_ce_forward(fp(loss), fp(lse), fp(dX), ip(dt), c.N, c.C, c.T);
    cu::softmax_ce_backward(fp(dx), fp(dev(seed)), fp(dX), fp(lse), ip(dt), c.N, c.C, c.T);
    CHECK(close(name + " loss", loss, ref.out, 1e-5, 1e-5));
    CHECK(close(name + " dx", dx, ref.grads[0], 1e-6, 1e-4));
  }
}

TEST_CASE("inbatch_softmax: log-Q correction, accidental hits, B = 1, long rows") {
  Rng rng(17);
  struct Case {
    std::int64_t B, D;
    bool log_q, ids;
  };
  for (Case c : {Case{16, 8, false, false}, Case{16, 8, true, true}, Case{1, 4, true, true}, Case{300, 32, true, false},
                 Case{40, 16, false, true}}) {
    const std::string name = "inbatch_softmax B" + std::to_string(c.B) + " D" + std::to_string(c.D) +
                             (c.log_q ? " log_q" : "") + (c.ids ? " ids" : "");
    const Tensor U = rnd({c.B, c.D}, rng), V = rnd({c.B, c.D}, rng);
    const Tensor lq = rnd({c.B}, rng, -8.0f, -2.0f);
    Tensor item_ids = Tensor::empty({c.B}, DType::i32);
    for (std::int64_t i = 0; i < c.B; ++i) item_ids.i32()[i] = static_cast<std::int32_t>(i % 5);  // repeats
    const float T = 0.2f;
    const std::vector<Tensor> in = {U, V}, g0 = rand_like(in, rng);
    const Tensor seed = rnd({1}, rng, 0.5f, 1.5f);
    const Ref ref = cpu_ref(
        [&](const std::vector<Var>& v) {
          return inbatch_softmax(v[0], v[1], T, c.log_q ? lq.f32() : nullptr, c.ids ? item_ids.i32() : nullptr);
        },
        in, g0, seed);
    const Tensor dU = dev(U), dV = dev(V), dlq = dev(lq), dids = dev(item_ids);
    Tensor loss = dempty({1}), P = dempty({c.B, c.B}), du = dev(g0[0]), dv = dev(g0[1]);
    cu::inbatch_softmax_forward(fp(loss), fp(P), fp(dU), fp(dV), c.log_q ? fp(dlq) : nullptr,
                                c.ids ? ip(dids) : nullptr, c.B, c.D, T);
    cu::inbatch_softmax_backward(fp(du), fp(dv), fp(dev(seed)), fp(P), fp(dU), fp(dV), c.B, c.D, T);
    CHECK(close(name + " loss", loss, ref.out, 1e-5, 1e-4));
    CHECK(close(name + " du", du, ref.grads[0], 1e-5, 1e-4));
    CHECK(close(name + " dv", dv, ref.grads[1], 1e-5, 1e-4));
  }
}

// ---- Adam ----------------------------------------------------------------------------------------

TEST_CASE("adam: dense steps and lazy rows (list and flags) match optim/adam.hpp") {
  Rng rng(18);
  AdamOptions opt;
  opt.lr = 1e-2;
  opt.weight_decay = 0.01;
  {  // dense, three steps
    Parameter p(rnd({37, 5}, rng));
    Tensor w = dev(p.value()), m = cu::zeros(p.shape()), v = cu::zeros(p.shape());
    Adam adam({&p}, opt);
    for (int t = 1; t <= 3; ++t) {
      const Tensor g = rnd(p.shape(), rng);
      p.grad().copy_from(g);
      adam.step();
      cu::adam_step(fp(w), fp(dev(g)), fp(m), fp(v), p.numel(),
                    cu::adam_scalars(opt.lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay, t));
    }
    CHECK(close("adam w", w, p.value(), 1e-6, 1e-5));
    CHECK(close("adam exp_avg", m, adam.state(0).exp_avg, 1e-7, 1e-5));
    CHECK(close("adam exp_avg_sq", v, adam.state(0).exp_avg_sq, 1e-9, 1e-5));
  }
  {  // lazy: only touched rows move; the rest keep value and moments bit for bit
    const std::int64_t V = 20, D = 4;
    Parameter p(rnd({V, D}, rng));
    p.track_rows(true);
    const Tensor w0 = p.value().clone();
    Tensor w_rows = dev(w0), m_rows = cu::zeros({V, D}), v_rows = cu::zeros({V, D});
    Tensor w_flag = dev(w0), m_flag = cu::zeros({V, D}), v_flag = cu::zeros({V, D});
    Adam adam({&p}, opt);
    const std::vector<std::vector<std::int32_t>> steps = {{3, 7, 19}, {7, 0}, {19}};
    for (std::size_t s = 0; s < steps.size(); ++s) {
      const Tensor g = rnd({V, D}, rng);
      p.grad().copy_from(g);
      std::vector<std::uint8_t> flags(static_cast<std::size_t>(V), 0);
      for (std::int32_t r : steps[s]) {
        p.var().mark_row(r);
        flags[static_cast<std::size_t>(r)] = 1;
      }
      adam.step();
      const cu::AdamScalars c =
          cu::adam_scalars(opt.lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay, static_cast<std::int32_t>(s + 1));
      const Tensor dg = dev(g);
      const Tensor rows = dev(Tensor::from_vector({static_cast<std::int64_t>(steps[s].size())}, steps[s].data()));
      cu::adam_step_rows(fp(w_rows), fp(dg), fp(m_rows), fp(v_rows), ip(rows), rows.numel(), D, c);
      Tensor dflags = touched_flags(V);
      cu::copy(dflags, Tensor::view_of(flags.data(), {V / 4}, DType::i32));  // V = 20: a whole number of int32s
      cu::adam_step_flagged(fp(w_flag), fp(dg), fp(m_flag), fp(v_flag), flags_ptr(dflags), V, D, c);
      // zero_grad of a lazy parameter: flagged rows of g zeroed, flags cleared.
      Tensor gz = dev(g);
      cu::zero_flagged_rows(fp(gz), flags_ptr(dflags), V, D);
      Tensor gz_ref = g.clone();
      for (std::int32_t r : steps[s])
        for (std::int64_t j = 0; j < D; ++j) gz_ref.f32()[r * D + j] = 0.0f;
      CHECK(close("zero_flagged_rows", gz, gz_ref, 0, 0));
      CHECK(same_bits("flags cleared", dflags, Tensor::zeros({V / 4}, DType::i32)));
      adam.zero_grad();
    }
    CHECK(close("lazy adam w (rows)", w_rows, p.value(), 1e-6, 1e-5));
    CHECK(close("lazy adam w (flags)", w_flag, p.value(), 1e-6, 1e-5));
    CHECK(close("lazy adam exp_avg", m_rows, adam.state(0).exp_avg, 1e-7, 1e-5));
    CHECK(close("lazy adam exp_avg_sq", v_flag, adam.state(0).exp_avg_sq, 1e-9, 1e-5));
    // Row 1 was never touched: bit for bit its initial value.
    const Tensor wr = cu::to_host(w_rows);
    CHECK(std::memcmp(wr.f32() + D, w0.f32() + D, D * sizeof(float)) == 0);
  }
}

// ---- top-k ---------------------------------------------------------------------------------------

TEST_CASE("topk: exact indices incl. ties, NaN, signed zeros, k = 1, k = M, the largest k") {
  Rng rng(19);
  struct Case {
    std::int64_t N, M, k;
    int kind;  // 0 random, 1 few distinct values (ties), 2 specials
  };
  for (Case c : {Case{7, 1000, 10, 0}, Case{3, 50, 1, 0}, Case{4, 300, 300, 0}, Case{5, 2000, 100, 1},
                 Case{3, 400, 64, 2}, Case{2, 200000, 50, 0}, Case{1, 5000, 4096, 1}, Case{1, 1, 1, 0},
                 Case{65, 33, 7, 1}}) {
    const std::string name = "topk [" + std::to_string(c.N) + "," + std::to_string(c.M) + "] k " + std::to_string(c.k) +
                             " kind " + std::to_string(c.kind);
    Tensor S = rnd({c.N, c.M}, rng, -3.0f, 3.0f);
    float* s = S.f32();
    if (c.kind == 1)
      for (std::int64_t i = 0; i < S.numel(); ++i) s[i] = std::round(s[i] * 2.0f) / 2.0f;
    if (c.kind == 2)
      for (std::int64_t i = 0; i < S.numel(); ++i) {
        const int r = static_cast<int>(rng.below(10));
        if (r == 0) s[i] = std::numeric_limits<float>::quiet_NaN();
        if (r == 1) s[i] = -std::numeric_limits<float>::infinity();
        if (r == 2) s[i] = std::numeric_limits<float>::infinity();
        if (r == 3) s[i] = 0.0f;
        if (r == 4) s[i] = -0.0f;
      }
    const TopK ref = topk(S, c.k);
    Tensor values = dempty({c.N, c.k}), indices = dempty({c.N, c.k}, DType::i32);
    cu::topk(fp(values), indices.i32(), fp(dev(S)), c.N, c.M, c.k);
    CHECK(same_ints(name + " indices", indices, ref.indices));
    CHECK(same_bits(name + " values", values, ref.values));
  }
  CHECK_THROWS_WITH_AS(cu::topk(nullptr, nullptr, nullptr, 1, 5000, 5000), "cuda::topk: k = 5000 exceeds the CUDA top-k limit of 4096",
                       CudaError);
  CHECK_THROWS_WITH_AS(cu::topk(nullptr, nullptr, nullptr, 1, 5, 6), "cuda::topk: k = 6 must lie in [0, 5]", ShapeError);
}

TEST_CASE("score_topk: cuBLAS scores + block top-k match CPU GEMM + topk") {
  Rng rng(20);
  for (auto nmdk : std::vector<std::array<std::int64_t, 4>>{{9, 500, 16, 20}, {1, 3706, 64, 100}, {70, 40, 8, 40}}) {
    const std::int64_t N = nmdk[0], M = nmdk[1], D = nmdk[2], k = nmdk[3];
    const Tensor Q = rnd({N, D}, rng), I = rnd({M, D}, rng);
    Tensor S = Tensor::empty({N, M});
    detail::gemm(false, true, N, M, D, 1.0f, Q.f32(), D, I.f32(), D, 0.0f, S.f32(), M);
    const TopK ref = topk(S, k);
    Tensor values = dempty({N, k}), indices = dempty({N, k}, DType::i32);
    cu::score_topk(fp(values), indices.i32(), fp(dev(Q)), fp(dev(I)), N, M, D, k);
    const Tensor hv = cu::to_host(values), hi = cu::to_host(indices);
    // GEMM rounding may swap near-equal scores: an index may differ only where the scores tie
    // within 1e-4.
    std::int64_t bad = 0;
    for (std::int64_t r = 0; r < N; ++r)
      for (std::int64_t j = 0; j < k; ++j) {
        const std::int64_t t = r * k + j;
        const bool ok = hi.i32()[t] == ref.indices.i32()[t] ||
                        std::fabs(S.f32()[r * M + hi.i32()[t]] - ref.values.f32()[t]) <= 1e-4f;
        if (!ok && bad++ < 8)
          std::printf("  score_topk row %lld rank %lld: gpu item %d ref item %d\n", static_cast<long long>(r),
                      static_cast<long long>(j), hi.i32()[t], ref.indices.i32()[t]);
      }
    CHECK(bad == 0);
    CHECK(close("score_topk values", hv, ref.values, 1e-5, 1e-4));
  }
}

// ---- main ----------------------------------------------------------------------------------------

int main(int argc, char** argv) {
  if (!cu::available()) {
    std::printf("test_cuda_parity: SKIPPED: %s\n", cu::describe().c_str());
    return 0;
  }
  std::printf("test_cuda_parity: running on %s\n", cu::describe().c_str());
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
